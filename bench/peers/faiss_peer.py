#!/usr/bin/python3
"""bench/peers/faiss_peer.py - the FAISS IndexHNSWFlat peer of bench_hnsw
and `iqdb bench`: builds a FAISS HNSW index over a base set and measures
single-query (and optionally batch) search over a sweep of ef values, so
that iqdb's hnsw plugin can be compared with it on the same vectors in
the same run. Run it with Debian's /usr/bin/python3 (python3-faiss).

Peer protocol (shared with hnswlib_peer.cpp; keep the two in step)
------------------------------------------------------------------
Arguments:
  --base B.fvecs --queries Q.fvecs --k K --m M --ef-construction EFC
  --threads T --ef E1,E2,... --out PREFIX
  [--metric l2|ip] [--batch] [--seed S]

Files are TEXMEX: .fvecs is, per vector, a little-endian int32 dim then
dim float32; .ivecs the same with int32 values. The id of a base vector
is its row number.

The peer loads both files, builds the index on T threads (only the add
call is timed), then for each ef in the list searches every query one at
a time on 1 thread (omp_set_num_threads(1) and one index.search() call
per query; the whole loop is timed, best of up to 5 passes within 0.3 s)
and, with --batch, all queries in one
search call on T threads. Stdout carries one fact per line as
whitespace-separated key=value pairs and nothing else:

  build seconds=S threads=T n=N dim=D
  memory bytes=B
  search ef=E mode=single qps=Q ids=PREFIX.efE.single.ivecs
  search ef=E mode=batch qps=Q ids=PREFIX.efE.batch.ivecs   (--batch)

Each search writes its result ids to the named .ivecs file: per query the
int32 k then k int32 ids, nearest first, padded with -1. memory bytes is
the growth of VmRSS (/proc/self/status) from just before the index
object is created to just after the build, with the base vectors already
loaded: the index's own copy of the vectors plus the graph. Exit status
0 on success; on error a message on stderr and exit status 1.

--seed is accepted for the protocol's sake: FAISS draws HNSW levels from
its own fixed-seed generator, which the Python API does not expose.
"""
import argparse
import sys
import time


def fail(msg):
    print(f"faiss_peer: {msg}", file=sys.stderr)
    sys.exit(1)


try:
    import numpy as np
    import faiss
except ImportError as e:
    fail(f"{e} (install python3-faiss, or run bench/install-peers.sh)")


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    fail("no VmRSS in /proc/self/status")


def read_fvecs(path):
    raw = np.fromfile(path, dtype="<i4")
    if raw.size == 0:
        raise ValueError(f"{path}: empty file")
    dim = int(raw[0])
    if dim <= 0 or raw.size % (dim + 1) != 0:
        raise ValueError(f"{path}: not an fvecs file of dimension {dim}")
    rows = raw.reshape(-1, dim + 1)
    if not (rows[:, 0] == dim).all():
        raise ValueError(f"{path}: vectors of mixed dimensions")
    return np.ascontiguousarray(rows[:, 1:]).view("<f4")


def write_ivecs(path, ids):
    out = np.empty((ids.shape[0], ids.shape[1] + 1), dtype="<i4")
    out[:, 0] = ids.shape[1]
    out[:, 1:] = ids
    out.tofile(path)


def ef_list(text):
    try:
        efs = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad ef list '{text}'")
    if not efs or min(efs) < 1:
        raise argparse.ArgumentTypeError(f"bad ef list '{text}'")
    return efs


def positive(text):
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {text}")
    return v


def parse_args():
    p = argparse.ArgumentParser(description="FAISS IndexHNSWFlat peer")
    p.add_argument("--base", required=True)
    p.add_argument("--queries", required=True)
    p.add_argument("--k", type=positive, required=True)
    p.add_argument("--m", type=positive, required=True)
    p.add_argument("--ef-construction", type=positive, required=True)
    p.add_argument("--threads", type=positive, required=True)
    p.add_argument("--ef", type=ef_list, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--metric", choices=["l2", "ip"], default="l2")
    p.add_argument("--batch", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    try:
        return p.parse_args()
    except SystemExit as e:
        # argparse exits 2 on bad usage; the protocol says 1.
        sys.exit(0 if e.code == 0 else 1)


def report(args, ef, mode, qps, ids):
    path = f"{args.out}.ef{ef}.{mode}.ivecs"
    write_ivecs(path, ids)
    print(f"search ef={ef} mode={mode} qps={qps:.3f} ids={path}", flush=True)


def run(args):
    xb = read_fvecs(args.base)
    xq = read_fvecs(args.queries)
    n, dim = xb.shape
    if xq.shape[1] != dim:
        fail(f"queries have dimension {xq.shape[1]}, base {dim}")
    metric = faiss.METRIC_INNER_PRODUCT if args.metric == "ip" \
        else faiss.METRIC_L2

    rss0 = rss_bytes()
    index = faiss.IndexHNSWFlat(dim, args.m, metric)
    index.hnsw.efConstruction = args.ef_construction
    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    index.add(xb)
    build_s = time.perf_counter() - t0
    rss1 = rss_bytes()
    print(f"build seconds={build_s:.6f} threads={args.threads} n={n} "
          f"dim={dim}")
    print(f"memory bytes={max(rss1 - rss0, 0)}", flush=True)

    k = args.k
    ids = np.empty((xq.shape[0], k), dtype=np.int64)
    rows = [xq[i:i + 1] for i in range(xq.shape[0])]
    for ef in args.ef:
        index.hnsw.efSearch = ef
        faiss.omp_set_num_threads(1)
        for q in rows[:10]:  # warm-up
            index.search(q, k)
        # The best of up to 5 timed passes, stopping once 0.3 s have gone
        # (a single short pass is at the mercy of the scheduler).
        qps, start, npass = 0.0, time.perf_counter(), 0
        while npass < 5 and (npass == 0 or time.perf_counter() - start < 0.3):
            t0 = time.perf_counter()
            for i, q in enumerate(rows):
                ids[i] = index.search(q, k)[1][0]
            qps = max(qps, len(rows) / (time.perf_counter() - t0))
            npass += 1
        report(args, ef, "single", qps, ids)
        if args.batch:
            faiss.omp_set_num_threads(args.threads)
            t0 = time.perf_counter()
            _, bids = index.search(xq, k)
            qps = len(rows) / (time.perf_counter() - t0)
            report(args, ef, "batch", qps, bids)


def main():
    args = parse_args()
    try:
        run(args)
    except (OSError, ValueError, RuntimeError, MemoryError) as e:
        fail(str(e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
