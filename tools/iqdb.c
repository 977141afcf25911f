/*
 * tools/iqdb.c - the iqdb command-line program: main, shared helpers and
 * the record commands (create import search get delete info compact check
 * export plugins). demo and bench live in demo.c and cmd_bench.c. Built
 * on the public API only; the options are documented in iqdb(1)
 * (docs/man/iqdb.1) and by each command's --help.
 */
#define _GNU_SOURCE

#include "cli.h"

#include <iqdb/plugin.h> /* IQDB_CAP_* names for iqdb plugins */

#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int cli_quiet;
const char *cli_self = "iqdb";

/* ---- messages and small helpers ------------------------------------------ */

void cli_err(const char *fmt, ...)
{
    va_list ap;
    fputs("iqdb: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

int cli_lib_err(const iqdb *db, int rc, const char *what)
{
    const char *m = iqdb_errmsg(db);
    fprintf(stderr, "iqdb: %s: %s: %s\n", what, iqdb_errname(rc),
            m && m[0] ? m : iqdb_strerror(rc));
    return rc == IQDB_ENOTFOUND ? CLI_EXIT_NOTFOUND : CLI_EXIT_FAIL;
}

double cli_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void cli_setup_plugins(void)
{
#if defined(IQDB_BUILD_DIR) && defined(IQDB_BUILD_PLUGINS)
    /* Running uninstalled from the build tree (./tools/iqdb): use the
     * plugins and bench peers built beside it. An installed binary never
     * looks there. */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    size_t bl = strlen(IQDB_BUILD_DIR);
    if (n > 0) {
        exe[n] = '\0';
        if (strncmp(exe, IQDB_BUILD_DIR, bl) == 0 && exe[bl] == '/') {
            iqdb_plugin_add_dir(IQDB_BUILD_PLUGINS);
            cli_self = IQDB_BUILD_DIR "/tools/iqdb";
#ifdef IQDB_SRC_PEERS
            setenv("IQDB_PEER_DIR", IQDB_SRC_PEERS, 0);
#endif
        }
    }
#endif
}

/* Parse a non-negative integer option value into *out (at most max). */
static int parse_u64(const char *opt, const char *s, uint64_t max,
                     uint64_t *out)
{
    char *end;
    errno = 0;
    if (s == NULL || !isdigit((unsigned char)s[0]))
        goto bad;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        goto bad;
    *out = v;
    return 0;
bad:
    cli_err("%s: '%s' is not an integer in 0..%llu", opt, s ? s : "",
            (unsigned long long)max);
    return -1;
}

/* An id from the command line: all decimal digits (fitting 64 bits) is
 * an integer id, "str:TEXT" is the string TEXT, anything else a string. */
static iqdb_id parse_id(const char *s)
{
    if (strncmp(s, "str:", 4) == 0)
        return iqdb_id_bytes(s + 4, strlen(s + 4));
    size_t n = strlen(s);
    int digits = n > 0 && n <= 20;
    for (size_t i = 0; digits && i < n; i++)
        digits = isdigit((unsigned char)s[i]);
    if (digits) {
        errno = 0;
        unsigned long long v = strtoull(s, NULL, 10);
        if (errno == 0)
            return iqdb_id_u64(v);
    }
    return iqdb_id_bytes(s, n);
}

/* An id as text, the way parse_id reads it back. */
static void print_id(FILE *f, iqdb_id id)
{
    if (id.kind == IQDB_ID_U64) {
        fprintf(f, "%llu", (unsigned long long)id.v.u64);
        return;
    }
    const unsigned char *b = id.v.bytes;
    int digits = id.len > 0 && id.len <= 20;
    for (uint32_t i = 0; digits && i < id.len; i++)
        digits = isdigit(b[i]);
    if (digits || (id.len >= 4 && memcmp(b, "str:", 4) == 0))
        fputs("str:", f);
    for (uint32_t i = 0; i < id.len; i++) {
        if (b[i] >= 0x20 && b[i] < 0x7f && b[i] != '\\')
            fputc(b[i], f);
        else
            fprintf(f, "\\x%02x", b[i]);
    }
}

static int parse_fsync(const char *s, iqdb_fsync *pol, uint32_t *ms)
{
    *ms = 0;
    if (strcmp(s, "always") == 0) {
        *pol = IQDB_FSYNC_ALWAYS;
        return 0;
    }
    if (strcmp(s, "never") == 0) {
        *pol = IQDB_FSYNC_NEVER;
        return 0;
    }
    if (strncmp(s, "periodic", 8) == 0) {
        uint64_t v = 100;
        *pol = IQDB_FSYNC_PERIODIC;
        if (s[8] == '\0' || (s[8] == ':' &&
                             parse_u64("--fsync periodic", s + 9, 3600000,
                                       &v) == 0 && v > 0)) {
            *ms = (uint32_t)v;
            return 0;
        }
    }
    cli_err("--fsync: '%s' is not always, never or periodic:MS", s);
    return -1;
}

/* KEY=VALUE into key/value buffers. */
static int split_kv(const char *opt, const char *s, char *key, size_t kcap,
                    const char **value)
{
    const char *eq = strchr(s, '=');
    if (eq == NULL || eq == s || (size_t)(eq - s) >= kcap) {
        cli_err("%s: '%s' is not KEY=VALUE", opt, s);
        return -1;
    }
    memcpy(key, s, (size_t)(eq - s));
    key[eq - s] = '\0';
    *value = eq + 1;
    return 0;
}

/* Open the existing database in dir, whatever its shape. */
static int open_existing(const char *dir, int readonly, const char *fsync,
                         iqdb **out)
{
    iqdb_config *cfg = iqdb_config_new(0, (iqdb_metric)0);
    if (cfg == NULL) {
        cli_err("out of memory");
        return CLI_EXIT_FAIL;
    }
    iqdb_config_set_readonly(cfg, readonly);
    if (fsync != NULL) {
        iqdb_fsync pol;
        uint32_t ms;
        if (parse_fsync(fsync, &pol, &ms) != 0) {
            iqdb_config_free(cfg);
            return CLI_EXIT_USAGE;
        }
        iqdb_config_set_fsync(cfg, pol, ms);
    }
    int r = iqdb_open(dir, cfg, out);
    iqdb_config_free(cfg);
    if (r != 0) {
        char what[300];
        snprintf(what, sizeof what, "open %s", dir);
        return cli_lib_err(NULL, r, what);
    }
    return 0;
}

static int close_db(iqdb *db, const char *dir)
{
    int r = iqdb_close(db);
    if (r != 0) {
        char what[300];
        snprintf(what, sizeof what, "close %s", dir);
        return cli_lib_err(NULL, r, what);
    }
    return 0;
}

static int usage_error(const char *cmd, const char *usage)
{
    if (cmd != NULL)
        cli_err("%s: bad command line", cmd);
    fprintf(stderr, "usage: %s", usage);
    return CLI_EXIT_USAGE;
}

/* Options of the commands that take only --help and, when json is not
 * NULL, --json; then from min to max operands (max < 0: no limit).
 * Returns -1 to go on, or the exit code to return. */
static int simple_opts(int argc, char **argv, const char *name,
                       const char *usage, int *json, int min, int max)
{
    static const struct option with_json[] = {
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    static const struct option help_only[] = {
        {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c;
    if (json != NULL)
        *json = 0;
    while ((c = getopt_long(argc, argv, "h", json ? with_json : help_only,
                            NULL)) != -1) {
        if (c == 'j') {
            *json = 1;
        } else if (c == 'h') {
            fputs(usage, stdout);
            return 0;
        } else {
            return usage_error(NULL, usage);
        }
    }
    int n = argc - optind;
    if (n < min || (max >= 0 && n > max))
        return usage_error(name, usage);
    return -1;
}

/* Parse "0.1,0.2 0.3" into a new float array. */
static int parse_vector_text(const char *s, float **out, uint32_t *dim)
{
    size_t cap = 16, n = 0;
    float *v = malloc(cap * sizeof *v);
    if (v == NULL)
        return -1;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == ',' || *p == '\n' ||
               *p == '\r' || *p == '[' || *p == ']')
            p++;
        if (*p == '\0')
            break;
        char *end;
        errno = 0;
        double d = strtod(p, &end);
        if (end == p || !isfinite(d) || fabs(d) > 3.4028234663852886e38) {
            cli_err("vector: value %zu ('%.20s') is not a finite number",
                    n + 1, p);
            free(v);
            return -1;
        }
        if (n == cap) {
            float *nv = realloc(v, (cap *= 2) * sizeof *v);
            if (nv == NULL) {
                free(v);
                return -1;
            }
            v = nv;
        }
        v[n++] = (float)d;
        p = end;
    }
    if (n == 0 || n > IQDB_MAX_DIM) {
        cli_err("vector: %zu values (need 1..%u)", n, IQDB_MAX_DIM);
        free(v);
        return -1;
    }
    *out = v;
    *dim = (uint32_t)n;
    return 0;
}

/* Read one line (without the newline) into a growing buffer; -1 at EOF. */
static ssize_t read_line(FILE *f, char **buf, size_t *cap)
{
    ssize_t n = getline(buf, cap, f);
    if (n < 0)
        return -1;
    while (n > 0 && ((*buf)[n - 1] == '\n' || (*buf)[n - 1] == '\r'))
        (*buf)[--n] = '\0';
    return n;
}

/* ---- create -------------------------------------------------------------- */

static const char create_usage[] =
    "iqdb create DIR --dim N [--metric M] [--index NAME] [--param K=V]...\n"
    "            [--fsync always|periodic:MS|never]\n"
    "            [--compression none|zstd[:LEVEL]|lz4[:LEVEL]]\n"
    "Create a durable database in directory DIR (created when absent; it\n"
    "must not hold anything else). Metrics: euclidean (l2, default),\n"
    "cosine, dot (ip), manhattan (l1), hamming. Index: flat (default),\n"
    "hnsw, or any installed index plugin; --param sets its parameters.\n";

static int cmd_create(int argc, char **argv)
{
    static const struct option lo[] = {
        {"dim", required_argument, 0, 'd'},
        {"metric", required_argument, 0, 'm'},
        {"index", required_argument, 0, 'i'},
        {"param", required_argument, 0, 'p'},
        {"fsync", required_argument, 0, 'f'},
        {"compression", required_argument, 0, 'c'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    uint64_t dim = 0;
    const char *metric = "euclidean", *index = "flat", *fsync = NULL,
               *comp = NULL;
    char **params = calloc((size_t)argc, sizeof *params);
    size_t np = 0;
    int c, rc = CLI_EXIT_USAGE;
    iqdb_config *cfg = NULL;
    if (params == NULL)
        return CLI_EXIT_FAIL;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'd':
            if (parse_u64("--dim", optarg, IQDB_MAX_DIM, &dim) != 0 ||
                dim == 0) {
                if (dim == 0)
                    cli_err("--dim must be 1..%u", IQDB_MAX_DIM);
                goto out;
            }
            break;
        case 'm': metric = optarg; break;
        case 'i': index = optarg; break;
        case 'p': params[np++] = optarg; break;
        case 'f': fsync = optarg; break;
        case 'c': comp = optarg; break;
        case 'h': fputs(create_usage, stdout); rc = 0; goto out;
        default: rc = usage_error(NULL, create_usage); goto out;
        }
    }
    if (optind != argc - 1 || dim == 0) {
        rc = usage_error("create", create_usage);
        goto out;
    }
    const char *dir = argv[optind];
    char snap[PATH_MAX];
    struct stat st;
    snprintf(snap, sizeof snap, "%s/snapshot", dir);
    if (stat(snap, &st) == 0) {
        cli_err("create: %s already holds an iqdb database", dir);
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    iqdb_metric met;
    if (iqdb_metric_parse(metric, &met) != 0) {
        cli_err("--metric: unknown metric '%s' (euclidean, cosine, dot, "
                "manhattan, hamming)", metric);
        goto out;
    }
    if ((cfg = iqdb_config_new((uint32_t)dim, met)) == NULL) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    int r = iqdb_config_set_index(cfg, index);
    for (size_t i = 0; r == 0 && i < np; i++) {
        char key[256];
        const char *val;
        if (split_kv("--param", params[i], key, sizeof key, &val) != 0)
            goto out;
        r = iqdb_config_set_param(cfg, key, val);
    }
    if (r != 0) {
        rc = cli_lib_err(NULL, r, "create");
        goto out;
    }
    if (fsync != NULL) {
        iqdb_fsync pol;
        uint32_t ms;
        if (parse_fsync(fsync, &pol, &ms) != 0)
            goto out;
        iqdb_config_set_fsync(cfg, pol, ms);
    }
    if (comp != NULL) {
        char name[32];
        int level = 0;
        const char *colon = strchr(comp, ':');
        size_t nl = colon ? (size_t)(colon - comp) : strlen(comp);
        uint64_t lv = 0;
        /* Signed: zstd and lz4 take negative (fast) levels. The codec
         * checks the range at open. */
        int neg = colon && colon[1] == '-';
        if (nl == 0 || nl >= sizeof name ||
            (colon && parse_u64("--compression level", colon + 1 + neg,
                                1000000, &lv)))
        {
            cli_err("--compression: '%s' is not none, zstd[:LEVEL] or "
                    "lz4[:LEVEL]", comp);
            goto out;
        }
        memcpy(name, comp, nl);
        name[nl] = '\0';
        level = neg ? -(int)lv : (int)lv;
        iqdb_config_set_compression(cfg, name, level);
    }
    iqdb *db;
    if ((r = iqdb_open(dir, cfg, &db)) != 0) {
        char what[300];
        snprintf(what, sizeof what, "create %s", dir);
        rc = cli_lib_err(NULL, r, what);
        goto out;
    }
    if ((rc = close_db(db, dir)) != 0)
        goto out;
    if (!cli_quiet)
        printf("created %s: dim %u, metric %s, index %s\n", dir,
               (unsigned)dim, iqdb_metric_name(met), index);
    rc = 0;
out:
    iqdb_config_free(cfg);
    free(params);
    return rc;
}

/* ---- import --------------------------------------------------------------- */

static const char import_usage[] =
    "iqdb import DIR FILE [--format fvecs|bvecs|npy|csv|jsonl|idx]\n"
    "            [--ids FILE | --id-start N] [--metadata FILE.jsonl]\n"
    "            [--labels FILE] [--label-names fashion-mnist|none|A,B,...]\n"
    "            [--batch N] [--fsync always|periodic:MS|never]\n"
    "Add (or replace) the vectors of FILE in the database at DIR. The format\n"
    "comes from the file name unless given; .gz files are read as well.\n"
    "Ids: jsonl records carry their own; else one per line from --ids, else\n"
    "integers from --id-start (default 0). On malformed input every record\n"
    "before the bad one is committed and nothing from it on.\n";

/* Names for idx labels given by --label-names. */
typedef struct label_names {
    char **names;
    size_t n;
    char *buf;
} label_names;

static int split_names(const char *s, label_names *ln)
{
    ln->buf = strdup(s);
    size_t cap = 1;
    for (const char *p = s; *p; p++)
        cap += *p == ',';
    ln->names = calloc(cap, sizeof *ln->names);
    if (ln->buf == NULL || ln->names == NULL)
        return -1;
    char *save = NULL;
    for (char *t = strtok_r(ln->buf, ",", &save); t != NULL;
         t = strtok_r(NULL, ",", &save))
        ln->names[ln->n++] = t;
    return 0;
}

typedef struct import_batch {
    iqdb_record *recs;
    float *vecs;
    char **idbufs;
    iqdb_meta **metas;
    size_t n, cap;
    uint32_t dim;
} import_batch;

static void batch_clear(import_batch *b)
{
    for (size_t i = 0; i < b->n; i++) {
        iqdb_meta_free(b->metas[i]);
        b->metas[i] = NULL;
        free(b->idbufs[i]);
        b->idbufs[i] = NULL;
    }
    b->n = 0;
}

static int batch_flush(iqdb *db, import_batch *b, uint64_t *committed)
{
    if (b->n == 0)
        return 0;
    for (size_t i = 0; i < b->n; i++) {
        b->recs[i].vector = b->vecs + i * (size_t)b->dim;
        b->recs[i].meta = b->metas[i];
    }
    int r = iqdb_upsert_batch(db, b->recs, b->n, b->dim);
    if (r == 0)
        *committed += b->n;
    batch_clear(b);
    return r;
}

static int cmd_import(int argc, char **argv)
{
    static const struct option lo[] = {
        {"format", required_argument, 0, 'F'},
        {"ids", required_argument, 0, 'I'},
        {"id-start", required_argument, 0, 'S'},
        {"metadata", required_argument, 0, 'M'},
        {"labels", required_argument, 0, 'L'},
        {"label-names", required_argument, 0, 'N'},
        {"batch", required_argument, 0, 'B'},
        {"fsync", required_argument, 0, 'f'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *fmt_s = NULL, *ids_path = NULL, *meta_path = NULL,
               *labels_path = NULL, *names_s = NULL, *fsync = "never";
    uint64_t id_start = 0, batch = 1000;
    int have_start = 0, c, rc = CLI_EXIT_USAGE;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        switch (c) {
        case 'F': fmt_s = optarg; break;
        case 'I': ids_path = optarg; break;
        case 'S':
            if (parse_u64("--id-start", optarg, UINT64_MAX, &id_start))
                return CLI_EXIT_USAGE;
            have_start = 1;
            break;
        case 'M': meta_path = optarg; break;
        case 'L': labels_path = optarg; break;
        case 'N': names_s = optarg; break;
        case 'B':
            if (parse_u64("--batch", optarg, 1000000, &batch) || batch == 0) {
                if (batch == 0)
                    cli_err("--batch must be at least 1");
                return CLI_EXIT_USAGE;
            }
            break;
        case 'f': fsync = optarg; break;
        case 'h': fputs(import_usage, stdout); return 0;
        default: return usage_error(NULL, import_usage);
        }
    }
    if (optind != argc - 2)
        return usage_error("import", import_usage);
    if (ids_path != NULL && have_start) {
        cli_err("import: --ids and --id-start exclude each other");
        return CLI_EXIT_USAGE;
    }
    const char *dir = argv[optind], *file = argv[optind + 1];
    cli_format fmt = CLI_FMT_AUTO;
    if (fmt_s != NULL && cli_format_parse(fmt_s, &fmt) != 0) {
        cli_err("--format: unknown format '%s' (fvecs, bvecs, npy, csv, "
                "jsonl, idx)", fmt_s);
        return CLI_EXIT_USAGE;
    }
    if (fmt == CLI_FMT_AUTO && (fmt = cli_format_guess(file)) ==
                                   CLI_FMT_AUTO) {
        cli_err("import: cannot tell the format of %s from its name; use "
                "--format", file);
        return CLI_EXIT_USAGE;
    }

    char err[1024];
    iqdb *db = NULL;
    cli_reader *rd = NULL;
    FILE *idf = NULL, *mf = NULL;
    cli_labels labels = {0, NULL, NULL};
    label_names ln = {NULL, 0, NULL};
    import_batch b = {0};
    char *line = NULL;
    size_t linecap = 0;
    uint64_t committed = 0, nread = 0;
    cli_progress *pg = NULL;
    double t0 = cli_now();

    if (labels_path != NULL) {
        const char *const *names = NULL;
        size_t nn = 0;
        if (names_s == NULL) {
            if (strcasestr(labels_path, "fashion") != NULL) {
                names = cli_fmnist_names;
                nn = 10;
            }
        } else if (strcmp(names_s, "fashion-mnist") == 0) {
            names = cli_fmnist_names;
            nn = 10;
        } else if (strcmp(names_s, "none") != 0) {
            if (split_names(names_s, &ln) != 0) {
                cli_err("out of memory");
                rc = CLI_EXIT_FAIL;
                goto out;
            }
            names = (const char *const *)ln.names;
            nn = ln.n;
        }
        if (cli_labels_load(labels_path, names, nn, &labels, err,
                            sizeof err) != 0) {
            cli_err("import: %s", err);
            rc = CLI_EXIT_FAIL;
            goto out;
        }
    }
    if (ids_path != NULL && (idf = fopen(ids_path, "r")) == NULL) {
        cli_err("import: %s: %s", ids_path, strerror(errno));
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    if (meta_path != NULL && (mf = fopen(meta_path, "r")) == NULL) {
        cli_err("import: %s: %s", meta_path, strerror(errno));
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    if ((rc = open_existing(dir, 0, fsync, &db)) != 0)
        goto out;
    rc = CLI_EXIT_FAIL;
    uint32_t dim = iqdb_dim(db);
    if (cli_reader_open(file, fmt, dim, &rd, err, sizeof err) != 0) {
        cli_err("import: %s", err);
        goto out;
    }
    uint64_t hint = cli_reader_count_hint(rd);
    if (labels_path != NULL && hint != 0 && hint != labels.n) {
        cli_err("import: %s has %llu labels but %s has %llu records; "
                "nothing imported", labels_path,
                (unsigned long long)labels.n, file,
                (unsigned long long)hint);
        goto out;
    }
    b.dim = dim;
    b.cap = (size_t)batch;
    b.recs = calloc(b.cap, sizeof *b.recs);
    b.vecs = malloc(b.cap * (size_t)dim * sizeof(float));
    b.idbufs = calloc(b.cap, sizeof *b.idbufs);
    b.metas = calloc(b.cap, sizeof *b.metas);
    if (!b.recs || !b.vecs || !b.idbufs || !b.metas) {
        cli_err("import: out of memory for a batch of %zu", b.cap);
        goto out;
    }
    pg = cli_progress_start("import", hint);
    int bad = 0; /* malformed input seen: stop after committing */
    for (;;) {
        cli_record rec;
        int g = cli_reader_next(rd, &rec, err, sizeof err);
        if (g == 0)
            break;
        if (g < 0) {
            bad = 1;
            break;
        }
        size_t i = b.n;
        memcpy(b.vecs + i * (size_t)dim, rec.vec, (size_t)dim * sizeof(float));
        b.metas[i] = rec.meta;
        iqdb_id id;
        if (rec.has_id) {
            id = rec.id;
        } else if (idf != NULL) {
            if (read_line(idf, &line, &linecap) < 0) {
                snprintf(err, sizeof err, "%s: no id for record %llu (the "
                         "file has fewer lines than %s has records)",
                         ids_path, (unsigned long long)rec.index + 1, file);
                bad = 1;
                iqdb_meta_free(b.metas[i]);
                b.metas[i] = NULL;
                break;
            }
            id = parse_id(line);
        } else {
            id = iqdb_id_u64(id_start + rec.index);
        }
        if (id.kind == IQDB_ID_BYTES) {
            /* Copy: the reader's or line buffer's bytes do not last. */
            b.idbufs[i] = malloc(id.len ? id.len : 1);
            if (b.idbufs[i] == NULL) {
                snprintf(err, sizeof err, "out of memory");
                bad = 1;
                break;
            }
            memcpy(b.idbufs[i], id.v.bytes, id.len);
            id.v.bytes = b.idbufs[i];
        }
        b.recs[i].id = id;
        /* Per-record metadata from --metadata and --labels. */
        if (mf != NULL) {
            if (read_line(mf, &line, &linecap) < 0) {
                snprintf(err, sizeof err, "%s: no metadata line for record "
                         "%llu", meta_path,
                         (unsigned long long)rec.index + 1);
                bad = 1;
                break;
            }
            cli_json j;
            char jerr[256];
            iqdb_meta *m = NULL;
            if (cli_json_parse(line, strlen(line), &j, jerr, sizeof jerr)) {
                snprintf(err, sizeof err, "%s: line %llu: %s", meta_path,
                         (unsigned long long)rec.index + 1, jerr);
                bad = 1;
                break;
            }
            int jr = cli_json_to_meta(&j, &m, jerr, sizeof jerr);
            cli_json_free(&j);
            if (jr != 0) {
                snprintf(err, sizeof err, "%s: line %llu: %s", meta_path,
                         (unsigned long long)rec.index + 1, jerr);
                bad = 1;
                break;
            }
            if (b.metas[i] != NULL) {
                /* Merge: jsonl's own metadata, then the file's. */
                for (size_t k = 0; k < iqdb_meta_count(m); k++) {
                    const char *key;
                    iqdb_value v;
                    iqdb_meta_at(m, k, &key, &v);
                    iqdb_meta_set(b.metas[i], key, v);
                }
                iqdb_meta_free(m);
            } else {
                b.metas[i] = m;
            }
        }
        if (labels_path != NULL) {
            if (rec.index >= labels.n) {
                snprintf(err, sizeof err, "%s has %zu labels, %s has more "
                         "records", labels_path, labels.n, file);
                bad = 1;
                break;
            }
            if (b.metas[i] == NULL && (b.metas[i] = iqdb_meta_new()) == NULL) {
                snprintf(err, sizeof err, "out of memory");
                bad = 1;
                break;
            }
            iqdb_meta_set(b.metas[i], "label",
                          iqdb_value_str(labels.text[rec.index]));
            if (labels.num != NULL)
                iqdb_meta_set(b.metas[i], "class",
                              iqdb_value_int(labels.num[rec.index]));
        }
        b.n++;
        nread++;
        if (b.n == b.cap) {
            int r = batch_flush(db, &b, &committed);
            if (r != 0) {
                cli_progress_end(pg);
                pg = NULL;
                rc = cli_lib_err(db, r, "import");
                goto report;
            }
            cli_progress_update(pg, committed);
        }
    }
    if (bad) {
        /* The record being built when the error came is not in b.n. */
        size_t i = b.n;
        iqdb_meta_free(b.metas[i]);
        b.metas[i] = NULL;
        free(b.idbufs[i]);
        b.idbufs[i] = NULL;
    }
    int r = batch_flush(db, &b, &committed);
    cli_progress_end(pg);
    pg = NULL;
    if (r != 0) {
        rc = cli_lib_err(db, r, "import");
        goto report;
    }
    if (bad) {
        cli_err("import: %s", err);
        goto report;
    }
    if (labels_path != NULL && nread != labels.n) {
        cli_err("import: %s has %zu labels but %s had %llu records",
                labels_path, labels.n, file, (unsigned long long)nread);
        goto report;
    }
    rc = 0;
report:
    if (rc != 0)
        cli_err("import: %llu records were imported before the error",
                (unsigned long long)committed);
out:
    cli_progress_end(pg);
    if (db != NULL) {
        size_t total = iqdb_count(db);
        int cr = close_db(db, dir);
        if (cr != 0 && rc == 0)
            rc = cr;
        if (rc == 0 && !cli_quiet) {
            double el = cli_now() - t0;
            printf("imported %llu records into %s (%zu in all) in %.2f s "
                   "(%.0f records/s)\n", (unsigned long long)committed, dir,
                   total, el, el > 0 ? (double)committed / el : 0.0);
        }
    }
    if (b.recs != NULL)
        batch_clear(&b);
    free(b.recs);
    free(b.vecs);
    free(b.idbufs);
    free(b.metas);
    free(line);
    cli_reader_close(rd);
    if (idf)
        fclose(idf);
    if (mf)
        fclose(mf);
    cli_labels_free(&labels);
    free(ln.names);
    free(ln.buf);
    return rc;
}

/* ---- search --------------------------------------------------------------- */

static const char search_usage[] =
    "iqdb search DIR (--query FILE | --vector \"0.1,0.2,...\" | -) [-k K]\n"
    "            [--filter EXPR] [--param KEY=VALUE]... [--json]\n"
    "Top-K nearest records (default K 10) to each query: every vector of\n"
    "FILE (any import format), the --vector, or each line of standard\n"
    "input with \"-\". --filter takes the filter language of libiqdb(3),\n"
    "e.g. 'label = \"Sneaker\" AND class < 8'. --param sets per-query index\n"
    "parameters such as ef_search=64.\n";

static void print_hits_text(const iqdb_results *res, size_t nq)
{
    for (size_t q = 0; q < nq; q++) {
        const iqdb_hit *h = iqdb_results_hits(res, q);
        size_t n = iqdb_results_count(res, q);
        if (nq > 1)
            printf("query %zu:\n", q);
        for (size_t i = 0; i < n; i++) {
            printf("%4zu  ", i + 1);
            print_id(stdout, h[i].id);
            printf("  %.6g", (double)h[i].distance);
            if (h[i].meta != NULL) {
                fputs("  ", stdout);
                cli_json_write_meta(stdout, h[i].meta);
            }
            fputc('\n', stdout);
        }
        if (n == 0)
            printf("  (no results)\n");
    }
}

static void print_hits_json(const iqdb_results *res, size_t nq)
{
    fputc('[', stdout);
    for (size_t q = 0; q < nq; q++) {
        const iqdb_hit *h = iqdb_results_hits(res, q);
        size_t n = iqdb_results_count(res, q);
        printf("%s{\"query\":%zu,\"hits\":[", q ? ",\n" : "", q);
        for (size_t i = 0; i < n; i++) {
            fputs(i ? ",{\"id\":" : "{\"id\":", stdout);
            cli_json_write_id(stdout, h[i].id);
            fputs(",\"distance\":", stdout);
            cli_json_write_double(stdout, (double)h[i].distance);
            fputs(",\"metadata\":", stdout);
            cli_json_write_meta(stdout, h[i].meta);
            fputc('}', stdout);
        }
        fputs("]}", stdout);
    }
    fputs("]\n", stdout);
}

static int cmd_search(int argc, char **argv)
{
    static const struct option lo[] = {
        {"query", required_argument, 0, 'Q'},
        {"vector", required_argument, 0, 'V'},
        {"filter", required_argument, 0, 'F'},
        {"param", required_argument, 0, 'p'},
        {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    const char *qfile = NULL, *vtext = NULL, *ftext = NULL;
    uint64_t k = 10;
    int json = 0, c, rc = CLI_EXIT_USAGE;
    char **params = calloc((size_t)argc, sizeof *params);
    size_t np = 0;
    if (params == NULL)
        return CLI_EXIT_FAIL;
    while ((c = getopt_long(argc, argv, "k:h", lo, NULL)) != -1) {
        switch (c) {
        case 'Q': qfile = optarg; break;
        case 'V': vtext = optarg; break;
        case 'F': ftext = optarg; break;
        case 'p': params[np++] = optarg; break;
        case 'j': json = 1; break;
        case 'k':
            if (parse_u64("-k", optarg, 1000000, &k) || k == 0) {
                if (k == 0)
                    cli_err("-k must be at least 1");
                free(params);
                return CLI_EXIT_USAGE;
            }
            break;
        case 'h': fputs(search_usage, stdout); free(params); return 0;
        default: free(params); return usage_error(NULL, search_usage);
        }
    }
    int stdin_q = 0;
    if (optind < argc - 1 && strcmp(argv[argc - 1], "-") == 0) {
        stdin_q = 1;
        argc--;
    }
    if (optind != argc - 1 || (!!qfile + !!vtext + stdin_q) != 1) {
        free(params);
        return usage_error("search", search_usage);
    }
    const char *dir = argv[optind];
    iqdb *db = NULL;
    iqdb_filter *flt = NULL;
    iqdb_params *ps = NULL;
    iqdb_results *res = NULL;
    float *qs = NULL;
    size_t nq = 0;
    uint32_t qdim = 0;
    char err[1024];

    if (ftext != NULL) {
        iqdb_parse_error pe;
        int r = iqdb_filter_parse(ftext, &flt, &pe);
        if (r == IQDB_EPARSE) {
            cli_err("--filter: at byte %zu: %s", pe.offset, pe.message);
            fprintf(stderr, "  %s\n  %*s^\n", ftext, (int)pe.offset, "");
            goto out;
        }
        if (r != 0) {
            rc = cli_lib_err(NULL, r, "--filter");
            goto out;
        }
    }
    if (np > 0) {
        if ((ps = iqdb_params_new()) == NULL) {
            rc = CLI_EXIT_FAIL;
            goto out;
        }
        for (size_t i = 0; i < np; i++) {
            char key[256];
            const char *val;
            if (split_kv("--param", params[i], key, sizeof key, &val) != 0)
                goto out;
            iqdb_params_set(ps, key, val);
        }
    }
    rc = CLI_EXIT_FAIL;
    if (qfile != NULL) {
        if (cli_read_matrix(qfile, CLI_FMT_AUTO, &qs, &nq, &qdim, err,
                            sizeof err) != 0) {
            cli_err("search: %s", err);
            goto out;
        }
    } else if (vtext != NULL) {
        if (parse_vector_text(vtext, &qs, &qdim) != 0)
            goto out;
        nq = 1;
    } else {
        char *line = NULL;
        size_t cap = 0, qcap = 0;
        ssize_t ln;
        size_t lineno = 0;
        while ((ln = read_line(stdin, &line, &cap)) >= 0) {
            lineno++;
            if (ln == 0)
                continue;
            float *v;
            uint32_t d;
            if (parse_vector_text(line, &v, &d) != 0) {
                cli_err("search: standard input line %zu", lineno);
                free(line);
                goto out;
            }
            if (nq > 0 && d != qdim) {
                cli_err("search: standard input line %zu has %u values, "
                        "the first had %u", lineno, d, qdim);
                free(v);
                free(line);
                goto out;
            }
            qdim = d;
            if (nq == qcap) {
                qcap = qcap ? 2 * qcap : 16;
                float *n2 = realloc(qs, qcap * d * sizeof(float));
                if (n2 == NULL) {
                    free(v);
                    free(line);
                    goto out;
                }
                qs = n2;
            }
            memcpy(qs + nq * d, v, d * sizeof(float));
            nq++;
            free(v);
        }
        free(line);
        if (nq == 0) {
            cli_err("search: no query vectors on standard input");
            goto out;
        }
    }
    if ((rc = open_existing(dir, 1, NULL, &db)) != 0)
        goto out;
    rc = CLI_EXIT_FAIL;
    int r;
    if (nq == 1)
        r = iqdb_search(db, qs, qdim, (size_t)k, flt, ps, &res);
    else
        r = iqdb_search_batch(db, qs, nq, qdim, (size_t)k, flt, ps, &res);
    if (r != 0) {
        rc = cli_lib_err(db, r, "search");
        goto out;
    }
    if (json)
        print_hits_json(res, nq);
    else
        print_hits_text(res, nq);
    rc = 0;
out:
    iqdb_results_free(res);
    if (db != NULL)
        iqdb_close(db);
    iqdb_filter_free(flt);
    iqdb_params_free(ps);
    free(qs);
    free(params);
    return rc;
}

/* ---- get, delete ------------------------------------------------------------ */

static const char get_usage[] =
    "iqdb get DIR ID [--json]\n"
    "Print record ID: its vector and metadata. IDs of decimal digits are\n"
    "integer ids; anything else (or str:TEXT) is a string id. Exit status 4\n"
    "when there is no such record.\n";

static int cmd_get(int argc, char **argv)
{
    int json;
    int rc = simple_opts(argc, argv, "get", get_usage, &json, 2, 2);
    if (rc >= 0)
        return rc;
    const char *dir = argv[optind];
    iqdb *db;
    rc = open_existing(dir, 1, NULL, &db);
    if (rc != 0)
        return rc;
    uint32_t dim = iqdb_dim(db);
    float *v = malloc((size_t)dim * sizeof *v);
    iqdb_meta *m = NULL;
    iqdb_id id = parse_id(argv[optind + 1]);
    int r = v ? iqdb_get(db, id, v, dim, &m) : IQDB_ENOMEM;
    if (r != 0) {
        rc = cli_lib_err(db, r, "get");
    } else if (json) {
        fputs("{\"id\":", stdout);
        cli_json_write_id(stdout, id);
        fputs(",\"vector\":[", stdout);
        for (uint32_t i = 0; i < dim; i++) {
            if (i)
                fputc(',', stdout);
            cli_json_write_double(stdout, (double)v[i]);
        }
        fputs("],\"metadata\":", stdout);
        cli_json_write_meta(stdout, m);
        fputs("}\n", stdout);
    } else {
        fputs("id: ", stdout);
        print_id(stdout, id);
        fputs("\nvector:", stdout);
        for (uint32_t i = 0; i < dim; i++)
            printf("%s%.9g", i ? "," : " ", (double)v[i]);
        fputs("\nmetadata: ", stdout);
        cli_json_write_meta(stdout, m);
        fputc('\n', stdout);
    }
    iqdb_meta_free(m);
    free(v);
    iqdb_close(db);
    return rc;
}

static const char delete_usage[] =
    "iqdb delete DIR ID...\n"
    "Delete records (ids as for iqdb get); ids that do not exist are\n"
    "ignored. Prints how many were present.\n";

static int cmd_delete(int argc, char **argv)
{
    int rc = simple_opts(argc, argv, "delete", delete_usage, NULL, 2, -1);
    if (rc >= 0)
        return rc;
    const char *dir = argv[optind];
    iqdb *db;
    rc = open_existing(dir, 0, NULL, &db);
    if (rc != 0)
        return rc;
    size_t present = 0, asked = 0;
    for (int i = optind + 1; i < argc; i++) {
        int was = 0;
        int r = iqdb_delete(db, parse_id(argv[i]), &was);
        if (r != 0) {
            rc = cli_lib_err(db, r, "delete");
            break;
        }
        asked++;
        present += (size_t)was;
    }
    int cr = close_db(db, dir);
    if (rc == 0)
        rc = cr;
    if (rc == 0 && !cli_quiet)
        printf("deleted %zu of %zu ids\n", present, asked);
    return rc;
}

/* ---- info, compact, check, export, plugins ------------------------------------ */

static const char info_usage[] =
    "iqdb info DIR [--json]\n"
    "Describe the database at DIR: dim, metric, index and parameters, count,\n"
    "files and their sizes, the log's length, codec, plugins. Read-only.\n";

static const char *kind_name(iqdb_plugin_kind k)
{
    return k == IQDB_PLUGIN_INDEX ? "index" : k == IQDB_PLUGIN_CODEC ? "codec"
                                                                      : "?";
}

static void caps_text(uint64_t caps, char *buf, size_t cap)
{
    static const struct {
        uint64_t bit;
        const char *name;
    } names[] = {{IQDB_CAP_EXACT, "exact"},
                 {IQDB_CAP_FILTER_BITMAP, "filter-bitmap"},
                 {IQDB_CAP_FILTER_PREDICATE, "filter-predicate"},
                 {IQDB_CAP_BATCH, "batch"},
                 {IQDB_CAP_REMOVE, "remove"},
                 {IQDB_CAP_PERSIST, "persist"},
                 {IQDB_CAP_TRAIN, "train"}};
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (caps & names[i].bit)
            n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s",
                                  n ? "," : "", names[i].name);
}

static void caps_json(FILE *f, uint64_t caps)
{
    char buf[200];
    caps_text(caps, buf, sizeof buf);
    fputc('[', f);
    char *save = NULL;
    int first = 1;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!first)
            fputc(',', f);
        first = 0;
        cli_json_write_str(f, t, strlen(t));
    }
    fputc(']', f);
}

static void jstr(const char *key, const char *val, int comma)
{
    printf("%s\"%s\":", comma ? "," : "", key);
    cli_json_write_str(stdout, val ? val : "", val ? strlen(val) : 0);
}

static int cmd_info(int argc, char **argv)
{
    int json;
    int rc = simple_opts(argc, argv, "info", info_usage, &json, 1, 1);
    if (rc >= 0)
        return rc;
    const char *dir = argv[optind];
    iqdb *db;
    rc = open_existing(dir, 1, NULL, &db);
    if (rc != 0)
        return rc;
    iqdb_stats st;
    int r = iqdb_stat(db, &st);
    if (r != 0) {
        rc = cli_lib_err(db, r, "info");
        iqdb_close(db);
        return rc;
    }
    iqdb_recovery rec;
    iqdb_recovery_report(db, &rec);
    iqdb_plugin_info *pl = NULL;
    size_t npl = 0;
    iqdb_plugin_list(&pl, &npl);
    if (json) {
        printf("{");
        jstr("path", dir, 0);
        printf(",\"dim\":%u", st.dim);
        jstr("metric", iqdb_metric_name(st.metric), 1);
        printf(",\"count\":%llu", (unsigned long long)st.count);
        jstr("index", st.index, 1);
        jstr("index_params", st.index_params, 1);
        jstr("codec", st.codec, 1);
        printf(",\"codec_level\":%d", st.codec_level);
        printf(",\"snapshot_bytes\":%llu,\"wal_bytes\":%llu,"
               "\"wal_file_bytes\":%llu,\"vector_memory_bytes\":%llu,"
               "\"index_memory_bytes\":%llu",
               (unsigned long long)st.snapshot_bytes,
               (unsigned long long)st.wal_bytes,
               (unsigned long long)st.wal_file_bytes,
               (unsigned long long)st.vector_bytes,
               (unsigned long long)st.index_bytes);
        printf(",\"recovery\":{\"frames_replayed\":%llu,"
               "\"bytes_truncated\":%llu}",
               (unsigned long long)rec.frames_replayed,
               (unsigned long long)rec.bytes_truncated);
        printf(",\"plugins\":[");
        for (size_t i = 0; i < npl; i++) {
            printf("%s{", i ? "," : "");
            jstr("name", pl[i].name, 0);
            jstr("kind", kind_name(pl[i].kind), 1);
            jstr("version", pl[i].version, 1);
            printf(",\"abi\":\"%u.%u\"", pl[i].abi_major, pl[i].abi_minor);
            jstr("file", pl[i].file, 1);
            printf("}");
        }
        printf("]}\n");
    } else {
        printf("path:          %s\n", dir);
        printf("dim:           %u\n", st.dim);
        printf("metric:        %s\n", iqdb_metric_name(st.metric));
        printf("records:       %llu\n", (unsigned long long)st.count);
        printf("index:         %s%s%s%s\n", st.index,
               st.index_params[0] ? " (" : "", st.index_params,
               st.index_params[0] ? ")" : "");
        if (st.codec_level)
            printf("codec:         %s (level %d)\n", st.codec,
                   st.codec_level);
        else
            printf("codec:         %s\n", st.codec);
        printf("snapshot:      %llu bytes\n",
               (unsigned long long)st.snapshot_bytes);
        printf("wal:           %llu bytes in use (file %llu bytes)\n",
               (unsigned long long)st.wal_bytes,
               (unsigned long long)st.wal_file_bytes);
        printf("memory:        %llu bytes of vectors, %llu bytes of index\n",
               (unsigned long long)st.vector_bytes,
               (unsigned long long)st.index_bytes);
        printf("plugins:      ");
        for (size_t i = 0; i < npl; i++)
            printf(" %s %s (%s)", pl[i].name, pl[i].version,
                   kind_name(pl[i].kind));
        printf("\n");
    }
    iqdb_plugin_list_free(pl);
    iqdb_close(db);
    return 0;
}

static const char compact_usage[] =
    "iqdb compact DIR\n"
    "Fold the write-ahead log into a new snapshot and empty the log.\n";

static int cmd_compact(int argc, char **argv)
{
    int rc = simple_opts(argc, argv, "compact", compact_usage, NULL, 1, 1);
    if (rc >= 0)
        return rc;
    const char *dir = argv[optind];
    iqdb *db;
    rc = open_existing(dir, 0, NULL, &db);
    if (rc != 0)
        return rc;
    iqdb_stats a, b;
    iqdb_stat(db, &a);
    int r = iqdb_flush(db);
    if (r != 0) {
        rc = cli_lib_err(db, r, "compact");
        iqdb_close(db);
        return rc;
    }
    iqdb_stat(db, &b);
    if ((rc = close_db(db, dir)) != 0)
        return rc;
    if (!cli_quiet)
        printf("compacted %s: log %llu -> %llu bytes, snapshot %llu -> %llu "
               "bytes\n", dir, (unsigned long long)a.wal_bytes,
               (unsigned long long)b.wal_bytes,
               (unsigned long long)a.snapshot_bytes,
               (unsigned long long)b.snapshot_bytes);
    return 0;
}

static const char check_usage[] =
    "iqdb check DIR [--json]\n"
    "Verify every checksum and structure of the snapshot and the log\n"
    "without changing anything. Each problem is reported with its file and\n"
    "byte offset. Exit status 3 when damage was found.\n";

typedef struct check_out {
    int json, n;
} check_out;

static void check_cb(void *ctx, const char *file, uint64_t off, int damage,
                     const char *msg)
{
    check_out *o = ctx;
    if (o->json) {
        printf("%s{", o->n ? "," : "");
        jstr("file", file, 0);
        printf(",\"offset\":%llu,\"damage\":%s", (unsigned long long)off,
               damage ? "true" : "false");
        jstr("message", msg, 1);
        printf("}");
    } else {
        printf("%s: %s at offset %llu: %s\n", damage ? "damage" : "note",
               file, (unsigned long long)off, msg);
    }
    o->n++;
}

static int cmd_check(int argc, char **argv)
{
    int json;
    int rc = simple_opts(argc, argv, "check", check_usage, &json, 1, 1);
    if (rc >= 0)
        return rc;
    rc = 0;
    const char *dir = argv[optind];
    check_out o = {json, 0};
    if (json)
        printf("{\"findings\":[");
    int r = iqdb_check(dir, NULL, check_cb, &o);
    if (r == IQDB_ECORRUPT)
        rc = CLI_EXIT_DAMAGE;
    else if (r != 0 && !json)
        return cli_lib_err(NULL, r, "check");
    if (json) {
        printf("],\"ok\":%s", r == 0 ? "true" : "false");
        if (r != 0 && r != IQDB_ECORRUPT) {
            jstr("error", iqdb_errname(r), 1);
            jstr("message", iqdb_errmsg(NULL), 1);
            rc = r == IQDB_ENOTFOUND ? CLI_EXIT_NOTFOUND : CLI_EXIT_FAIL;
        }
        printf("}\n");
    } else if (r == 0) {
        printf("%s: ok\n", dir);
    } else {
        printf("%s: damaged\n", dir);
    }
    return rc;
}

static const char export_usage[] =
    "iqdb export DIR FILE [--format jsonl|fvecs]\n"
    "Write every record of DIR to FILE: JSON lines {\"id\",\"vector\",\n"
    "\"metadata\"} (the default, re-imported by iqdb import) or TEXMEX fvecs\n"
    "(vectors only). FILE \"-\" is standard output.\n";

typedef struct export_ctx {
    FILE *f;
    int fvecs;
    uint32_t dim;
    uint64_t n;
    cli_progress *pg;
} export_ctx;

static int export_cb(void *arg, const iqdb_record *rec)
{
    export_ctx *x = arg;
    if (x->fvecs) {
        int32_t d = (int32_t)x->dim;
        fwrite(&d, 4, 1, x->f);
        fwrite(rec->vector, sizeof(float), x->dim, x->f);
    } else {
        fputs("{\"id\":", x->f);
        cli_json_write_id(x->f, rec->id);
        fputs(",\"vector\":[", x->f);
        for (uint32_t i = 0; i < x->dim; i++) {
            if (i)
                fputc(',', x->f);
            cli_json_write_double(x->f, (double)rec->vector[i]);
        }
        fputs("]", x->f);
        if (rec->meta != NULL) {
            fputs(",\"metadata\":", x->f);
            cli_json_write_meta(x->f, rec->meta);
        }
        fputs("}\n", x->f);
    }
    x->n++;
    if ((x->n & 1023) == 0)
        cli_progress_update(x->pg, x->n);
    return ferror(x->f) ? -1 : 0;
}

static int cmd_export(int argc, char **argv)
{
    static const struct option lo[] = {{"format", required_argument, 0, 'F'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
    const char *fmt = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
        if (c == 'F')
            fmt = optarg;
        else if (c == 'h') {
            fputs(export_usage, stdout);
            return 0;
        } else
            return usage_error(NULL, export_usage);
    }
    if (optind != argc - 2)
        return usage_error("export", export_usage);
    const char *dir = argv[optind], *file = argv[optind + 1];
    int fvecs = 0;
    if (fmt != NULL) {
        if (strcmp(fmt, "fvecs") == 0)
            fvecs = 1;
        else if (strcmp(fmt, "jsonl") != 0) {
            cli_err("--format: '%s' is not jsonl or fvecs", fmt);
            return CLI_EXIT_USAGE;
        }
    } else {
        fvecs = cli_format_guess(file) == CLI_FMT_FVECS;
    }
    iqdb *db;
    int rc = open_existing(dir, 1, NULL, &db);
    if (rc != 0)
        return rc;
    int to_stdout = strcmp(file, "-") == 0;
    FILE *f = to_stdout ? stdout : fopen(file, fvecs ? "wb" : "w");
    if (f == NULL) {
        cli_err("export: %s: %s", file, strerror(errno));
        iqdb_close(db);
        return CLI_EXIT_FAIL;
    }
    export_ctx x = {f, fvecs, iqdb_dim(db), 0, NULL};
    x.pg = to_stdout ? NULL : cli_progress_start("export", iqdb_count(db));
    int r = iqdb_foreach(db, export_cb, &x);
    cli_progress_end(x.pg);
    int werr = r != 0 || fflush(f) != 0 || ferror(f);
    if (!to_stdout && fclose(f) != 0)
        werr = 1;
    iqdb_close(db);
    if (werr) {
        cli_err("export: writing %s failed: %s", file, strerror(errno));
        return CLI_EXIT_FAIL;
    }
    if (!cli_quiet && !to_stdout)
        printf("exported %llu records to %s\n", (unsigned long long)x.n,
               file);
    return 0;
}

static const char plugins_usage[] =
    "iqdb plugins [--json]\n"
    "Load every plugin on the search path and list the index types and\n"
    "codecs: name, kind, version, ABI version, file, capabilities.\n";

static int cmd_plugins(int argc, char **argv)
{
    int json;
    int rc = simple_opts(argc, argv, "plugins", plugins_usage, &json, 0, 0);
    if (rc >= 0)
        return rc;
    iqdb_plugin_load_all();
    iqdb_plugin_info *pl;
    size_t n;
    int r = iqdb_plugin_list(&pl, &n);
    if (r != 0)
        return cli_lib_err(NULL, r, "plugins");
    if (json) {
        printf("[");
        for (size_t i = 0; i < n; i++) {
            printf("%s{", i ? ",\n" : "");
            jstr("name", pl[i].name, 0);
            jstr("kind", kind_name(pl[i].kind), 1);
            jstr("version", pl[i].version, 1);
            printf(",\"abi\":\"%u.%u\"", pl[i].abi_major, pl[i].abi_minor);
            jstr("module", pl[i].module, 1);
            jstr("file", pl[i].file, 1);
            jstr("description", pl[i].description, 1);
            printf(",\"capabilities\":");
            caps_json(stdout, pl[i].caps);
            if (pl[i].kind == IQDB_PLUGIN_CODEC)
                printf(",\"codec_id\":%u", pl[i].codec_id);
            printf("}");
        }
        printf("]\n");
    } else {
        printf("%-10s %-6s %-8s %-4s %-52s %s\n", "NAME", "KIND", "VERSION",
               "ABI", "CAPABILITIES", "FILE");
        for (size_t i = 0; i < n; i++) {
            char caps[200], abi[16];
            caps_text(pl[i].caps, caps, sizeof caps);
            snprintf(abi, sizeof abi, "%u.%u", pl[i].abi_major,
                     pl[i].abi_minor);
            printf("%-10s %-6s %-8s %-4s %-52s %s\n", pl[i].name,
                   kind_name(pl[i].kind), pl[i].version, abi,
                   caps[0] ? caps : "-", pl[i].file);
        }
        if (n == 0)
            printf("(no plugins found; plugin directory %s)\n",
                   iqdb_plugin_dir());
    }
    iqdb_plugin_list_free(pl);
    return 0;
}

/* ---- main ---------------------------------------------------------------- */

static const char main_usage[] =
    "usage: iqdb [-q|--quiet] [--plugin-dir DIR]... COMMAND [ARGS]\n"
    "       iqdb --version | --help;  iqdb COMMAND --help\n"
    "\n"
    "commands:\n"
    "  create DIR --dim N ...      create a durable database\n"
    "  import DIR FILE ...         add vectors (fvecs bvecs npy csv jsonl idx)\n"
    "  search DIR --query FILE|--vector V|- [-k K] [--filter EXPR]\n"
    "  get DIR ID                  print a record\n"
    "  delete DIR ID...            delete records\n"
    "  info DIR                    describe a database\n"
    "  compact DIR                 fold the log into a new snapshot\n"
    "  check DIR                   verify checksums and structure\n"
    "  export DIR FILE             write every record (jsonl, fvecs)\n"
    "  plugins                     list index and codec plugins\n"
    "  bench ...                   recall/QPS benchmark with an SVG plot\n"
    "  demo [DIR]                  Fashion-MNIST end to end\n"
    "\n"
    "Exit status: 0 ok, 1 failure, 2 bad command line, 3 damage found by\n"
    "check, 4 not found. See iqdb(1).\n";

typedef struct command {
    const char *name;
    int (*fn)(int, char **);
} command;

int main(int argc, char **argv)
{
    static const command cmds[] = {
        {"create", cmd_create},   {"import", cmd_import},
        {"search", cmd_search},   {"get", cmd_get},
        {"delete", cmd_delete},   {"info", cmd_info},
        {"compact", cmd_compact}, {"check", cmd_check},
        {"export", cmd_export},   {"plugins", cmd_plugins},
        {"bench", cli_cmd_bench}, {"demo", cli_cmd_demo}};
    int i = 1;
    cli_setup_plugins();
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-q") == 0 || strcmp(a, "--quiet") == 0) {
            cli_quiet = 1;
        } else if (strcmp(a, "--plugin-dir") == 0 && i + 1 < argc) {
            iqdb_plugin_add_dir(argv[++i]);
        } else if (strncmp(a, "--plugin-dir=", 13) == 0) {
            iqdb_plugin_add_dir(a + 13);
        } else if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            printf("iqdb %s (plugin ABI %u.%u)\n", iqdb_version(),
                   IQDB_ABI_MAJOR, IQDB_ABI_MINOR);
            return 0;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(main_usage, stdout);
            return 0;
        } else {
            cli_err("unknown option '%s'", a);
            fputs(main_usage, stderr);
            return CLI_EXIT_USAGE;
        }
    }
    if (i >= argc) {
        fputs(main_usage, stderr);
        return CLI_EXIT_USAGE;
    }
    for (size_t c = 0; c < sizeof cmds / sizeof cmds[0]; c++) {
        if (strcmp(argv[i], cmds[c].name) == 0) {
            /* Each command parses its own options with getopt_long;
             * --quiet is accepted after the command name too. */
            int n = 0;
            for (int j = i; j < argc; j++) {
                if (j > i && (strcmp(argv[j], "--quiet") == 0 ||
                              strcmp(argv[j], "-q") == 0)) {
                    cli_quiet = 1;
                    continue;
                }
                argv[i + n++] = argv[j];
            }
            argv[i + n] = NULL;
            optind = 1;
            return cmds[c].fn(n, argv + i);
        }
    }
    cli_err("unknown command '%s'", argv[i]);
    fputs(main_usage, stderr);
    return CLI_EXIT_USAGE;
}
