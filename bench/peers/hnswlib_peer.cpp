/*
 * bench/peers/hnswlib_peer.cpp - the hnswlib peer of bench_hnsw and
 * `iqdb bench`: builds an hnswlib HierarchicalNSW index over a base set
 * and measures single-query (and optionally batch) search over a sweep of
 * ef values, so that iqdb's hnsw plugin can be compared with it on the
 * same vectors in the same run.
 *
 * Callers compile it at run time (libhnswlib-dev, header only):
 *
 *     c++ -O3 -march=native -fopenmp -o EXE hnswlib_peer.cpp
 *
 * Peer protocol (shared with faiss_peer.py; keep the two in step)
 * ---------------------------------------------------------------
 * Arguments:
 *   --base B.fvecs --queries Q.fvecs --k K --m M --ef-construction EFC
 *   --threads T --ef E1,E2,... --out PREFIX
 *   [--metric l2|ip] [--batch] [--seed S]
 *
 * Files are TEXMEX: .fvecs is, per vector, a little-endian int32 dim then
 * dim float32; .ivecs the same with int32 values. The id of a base vector
 * is its row number.
 *
 * The peer loads both files, builds the index on T threads (only the add
 * calls are timed), then for each ef in the list searches every query one
 * at a time on 1 thread (searchKnn in a loop; the whole loop is timed,
 * best of up to 5 passes within 0.3 s)
 * and, with --batch, all queries again in parallel on T threads. Stdout
 * carries one fact per line as whitespace-separated key=value pairs and
 * nothing else:
 *
 *   build seconds=S threads=T n=N dim=D
 *   memory bytes=B
 *   search ef=E mode=single qps=Q ids=PREFIX.efE.single.ivecs
 *   search ef=E mode=batch qps=Q ids=PREFIX.efE.batch.ivecs   (--batch)
 *
 * Each search writes its result ids to the named .ivecs file: per query
 * the int32 k then k int32 ids, nearest first, padded with -1.
 * memory bytes is the growth of VmRSS (/proc/self/status) from just
 * before the index object is created to just after the build, with the
 * base vectors already loaded: the index's own copy of the vectors plus
 * the graph. Exit status 0 on success; on error a message on stderr and
 * exit status 1.
 */
#include <hnswlib/hnswlib.h>

#include <omp.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

struct Matrix {
    std::vector<float> data;
    size_t rows = 0;
    size_t dim = 0;
    const float *row(size_t i) const { return data.data() + i * dim; }
};

struct Options {
    std::string base, queries, out, metric = "l2";
    size_t k = 10, m = 16, efc = 200, seed = 100;
    int threads = 1;
    bool batch = false;
    std::vector<size_t> efs;
};

[[noreturn]] void fail(const std::string &msg)
{
    std::fprintf(stderr, "hnswlib_peer: %s\n", msg.c_str());
    std::exit(1);
}

double now_s()
{
    using clock = std::chrono::steady_clock;
    return std::chrono::duration<double>(clock::now().time_since_epoch())
        .count();
}

/* Resident set size in bytes, from /proc/self/status (VmRSS, in kB). */
size_t rss_bytes()
{
    FILE *f = std::fopen("/proc/self/status", "r");
    char line[256];
    size_t kb = 0;

    if (f == nullptr)
        fail("cannot open /proc/self/status");
    while (std::fgets(line, sizeof(line), f) != nullptr)
        if (std::strncmp(line, "VmRSS:", 6) == 0) {
            kb = std::strtoull(line + 6, nullptr, 10);
            break;
        }
    std::fclose(f);
    return kb * 1024;
}

Matrix read_fvecs(const std::string &path)
{
    FILE *f = std::fopen(path.c_str(), "rb");
    Matrix m;
    int32_t d;

    if (f == nullptr)
        fail(path + ": " + std::strerror(errno));
    while (std::fread(&d, sizeof(d), 1, f) == 1) {
        if (d <= 0 || (m.dim != 0 && (size_t)d != m.dim))
            fail(path + ": bad or mixed dimension " + std::to_string(d) +
                 " at vector " + std::to_string(m.rows));
        m.dim = (size_t)d;
        m.data.resize((m.rows + 1) * m.dim);
        if (std::fread(m.data.data() + m.rows * m.dim, sizeof(float), m.dim,
                       f) != m.dim)
            fail(path + ": truncated vector " + std::to_string(m.rows));
        m.rows++;
    }
    if (std::ferror(f) || m.rows == 0)
        fail(path + ": read error or empty file");
    std::fclose(f);
    return m;
}

void write_ivecs(const std::string &path, const std::vector<int32_t> &ids,
                 size_t nq, size_t k)
{
    FILE *f = std::fopen(path.c_str(), "wb");
    int32_t kk = (int32_t)k;

    if (f == nullptr)
        fail(path + ": " + std::strerror(errno));
    for (size_t q = 0; q < nq; q++)
        if (std::fwrite(&kk, sizeof(kk), 1, f) != 1 ||
            std::fwrite(ids.data() + q * k, sizeof(int32_t), k, f) != k)
            fail(path + ": write error");
    if (std::fclose(f) != 0)
        fail(path + ": write error");
}

size_t parse_num(const char *opt, const char *v, size_t lo)
{
    char *end;
    errno = 0;
    unsigned long long x = std::strtoull(v, &end, 10);

    if (errno != 0 || end == v || *end != '\0' || x < lo)
        fail(std::string(opt) + ": bad value '" + v + "'");
    return (size_t)x;
}

Options parse_args(int argc, char **argv)
{
    Options o;

    for (int i = 1; i < argc; i++) {
        std::string a = argv[i];
        if (a == "--batch") {
            o.batch = true;
            continue;
        }
        if (i + 1 >= argc)
            fail("option " + a + " needs a value (or is unknown)");
        const char *v = argv[++i];
        if (a == "--base")
            o.base = v;
        else if (a == "--queries")
            o.queries = v;
        else if (a == "--out")
            o.out = v;
        else if (a == "--metric")
            o.metric = v;
        else if (a == "--k")
            o.k = parse_num("--k", v, 1);
        else if (a == "--m")
            o.m = parse_num("--m", v, 2);
        else if (a == "--ef-construction")
            o.efc = parse_num("--ef-construction", v, 1);
        else if (a == "--threads")
            o.threads = (int)parse_num("--threads", v, 1);
        else if (a == "--seed")
            o.seed = parse_num("--seed", v, 0);
        else if (a == "--ef") {
            std::string s = v;
            size_t p = 0;
            while (p <= s.size()) {
                size_t c = s.find(',', p);
                if (c == std::string::npos)
                    c = s.size();
                o.efs.push_back(
                    parse_num("--ef", s.substr(p, c - p).c_str(), 1));
                p = c + 1;
            }
        } else
            fail("unknown option " + a);
    }
    if (o.base.empty() || o.queries.empty() || o.out.empty() || o.efs.empty())
        fail("--base, --queries, --ef and --out are required");
    if (o.metric != "l2" && o.metric != "ip")
        fail("--metric must be l2 or ip, not " + o.metric);
    return o;
}

/* Copy a searchKnn answer (a max-heap: farthest on top) into row out[0..k),
 * nearest first, -1 padded. */
void take(std::priority_queue<std::pair<float, hnswlib::labeltype>> r,
          int32_t *out, size_t k)
{
    for (size_t i = 0; i < k; i++)
        out[i] = -1;
    while (r.size() > k)
        r.pop();
    for (size_t i = r.size(); i > 0; i--) {
        out[i - 1] = (int32_t)r.top().second;
        r.pop();
    }
}

void report_search(const Options &o, size_t ef, const char *mode, double qps,
                   const std::vector<int32_t> &ids, size_t nq)
{
    std::string path = o.out + ".ef" + std::to_string(ef) + "." + mode +
                       ".ivecs";
    write_ivecs(path, ids, nq, o.k);
    std::printf("search ef=%zu mode=%s qps=%.3f ids=%s\n", ef, mode, qps,
                path.c_str());
    std::fflush(stdout);
}

int run(const Options &o)
{
    Matrix base = read_fvecs(o.base), qs = read_fvecs(o.queries);
    if (qs.dim != base.dim)
        fail("queries have dimension " + std::to_string(qs.dim) +
             ", base " + std::to_string(base.dim));
    if (base.rows > (size_t)INT32_MAX)
        fail("too many base vectors for int32 ids");

    hnswlib::L2Space l2(base.dim);
    hnswlib::InnerProductSpace ip(base.dim);
    hnswlib::SpaceInterface<float> *space =
        o.metric == "ip" ? static_cast<hnswlib::SpaceInterface<float> *>(&ip)
                         : static_cast<hnswlib::SpaceInterface<float> *>(&l2);

    size_t rss0 = rss_bytes();
    auto *index = new hnswlib::HierarchicalNSW<float>(space, base.rows, o.m,
                                                      o.efc, o.seed);
    omp_set_num_threads(o.threads);
    double t0 = now_s();
    index->addPoint(base.row(0), 0);
#pragma omp parallel for schedule(dynamic, 64) num_threads(o.threads)
    for (size_t i = 1; i < base.rows; i++)
        index->addPoint(base.row(i), (hnswlib::labeltype)i);
    double build_s = now_s() - t0;
    size_t rss1 = rss_bytes();
    std::printf("build seconds=%.6f threads=%d n=%zu dim=%zu\n", build_s,
                o.threads, base.rows, base.dim);
    std::printf("memory bytes=%zu\n", rss1 > rss0 ? rss1 - rss0 : 0);
    std::fflush(stdout);

    std::vector<int32_t> ids(qs.rows * o.k);
    for (size_t ef : o.efs) {
        index->setEf(ef);
        for (size_t q = 0; q < qs.rows && q < 10; q++) /* warm-up */
            take(index->searchKnn(qs.row(q), o.k), ids.data() + q * o.k, o.k);
        /* The best of up to 5 timed passes, stopping once 0.3 s have
         * gone: a single pass of a few milliseconds is at the mercy of
         * the scheduler on a shared machine. */
        double best = 0.0, start = now_s();
        for (int pass = 0; pass < 5 && (pass == 0 || now_s() - start < 0.3);
             pass++) {
            t0 = now_s();
            for (size_t q = 0; q < qs.rows; q++)
                take(index->searchKnn(qs.row(q), o.k), ids.data() + q * o.k,
                     o.k);
            double qps = (double)qs.rows / (now_s() - t0);
            if (qps > best)
                best = qps;
        }
        report_search(o, ef, "single", best, ids, qs.rows);
        if (!o.batch)
            continue;
        t0 = now_s();
#pragma omp parallel for schedule(dynamic, 16) num_threads(o.threads)
        for (size_t q = 0; q < qs.rows; q++)
            take(index->searchKnn(qs.row(q), o.k), ids.data() + q * o.k, o.k);
        report_search(o, ef, "batch", (double)qs.rows / (now_s() - t0), ids,
                      qs.rows);
    }
    delete index;
    return 0;
}

} // namespace

int main(int argc, char **argv)
{
    try {
        return run(parse_args(argc, argv));
    } catch (const std::exception &e) {
        fail(e.what());
    }
}
