#!/usr/bin/python3
"""bench/faiss_flat.py - the FAISS peer run by bench_flat in the same run.

Reads base and query vectors from TEXMEX .fvecs files, builds a FAISS
IndexFlatL2 over the base and measures:
  * single-query QPS: one index.search() call per query, 1 OpenMP thread,
    the same loop bench_flat times for iqdb_search();
  * batch QPS: one index.search() over all queries on --threads threads.
Writes the batch top-k ids to --ids-out (.ivecs) for bench_flat's recall
check and prints one JSON line on stdout with the figures and the BLAS
library FAISS actually loaded (read from /proc/self/maps, since a Debian
system picks it through update-alternatives).

OpenBLAS picks its kernels from the CPU model at load time. A CPU newer
than the OpenBLAS build (0.3.21 in Debian 12 on a recent Xeon) falls back
to the Prescott (SSE3) kernels, which would make FAISS's batch search,
a BLAS sgemm, several times slower than it can be. To compare with FAISS
at its best, the script then re-runs itself with OPENBLAS_CORETYPE set to
the best kernel family the CPU supports, and says so in its output;
--blas-as-is keeps the library's own choice.

Run with Debian's /usr/bin/python3 (python3-faiss), not a pyenv python.
"""
import argparse
import ctypes
import json
import os
import sys
import time

import numpy as np
import faiss


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
    return np.ascontiguousarray(rows[:, 1:]).view("<f4").astype(np.float32, copy=False)


def write_ivecs(path, ids):
    ids = np.asarray(ids, dtype=np.int64)
    if ids.min(initial=0) < -1 or ids.max(initial=0) > np.iinfo(np.int32).max:
        raise ValueError("ids do not fit in int32")
    out = np.empty((ids.shape[0], ids.shape[1] + 1), dtype="<i4")
    out[:, 0] = ids.shape[1]
    out[:, 1:] = ids
    out.tofile(path)


def blas_libs():
    """The BLAS/LAPACK libraries mapped into this process."""
    paths = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                parts = line.split()
                if len(parts) < 6:
                    continue
                p = parts[5]
                base = os.path.basename(p)
                if ("blas" in base or "lapack" in base or "mkl" in base) \
                        and p not in paths:
                    paths.append(p)
    except OSError:
        pass
    return paths


def openblas_lib():
    """A handle on the loaded OpenBLAS, or None."""
    for p in blas_libs():
        if "openblas" in os.path.basename(os.path.realpath(p)):
            try:
                return ctypes.CDLL(p)
            except OSError:
                return None
    return None


def openblas_core():
    lib = openblas_lib()
    if lib is None:
        return None
    try:
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib.openblas_get_corename().decode()
    except AttributeError:
        return None


def blas_info():
    """Name the BLAS libraries in use and, for OpenBLAS, its build
    configuration, threading model and the kernel family it runs."""
    paths = blas_libs()
    if not paths:
        return "none mapped (FAISS built without a shared BLAS?)"
    desc = []
    for p in paths:
        real = os.path.realpath(p)
        desc.append(real if real == p else f"{p} -> {real}")
    lib = openblas_lib()
    if lib is not None:
        try:
            lib.openblas_get_config.restype = ctypes.c_char_p
            par = {0: "sequential", 1: "pthreads", 2: "openmp"}.get(
                lib.openblas_get_parallel(), "?")
            desc.append(f"[{lib.openblas_get_config().decode()}; "
                        f"threading {par}; kernels {openblas_core()}]")
        except AttributeError:
            pass
    return "; ".join(desc)


def faiss_build():
    """Which SWIG module FAISS loaded: its loader picks swigfaiss_avx2 when
    the CPU has AVX2 and the module is installed, else the generic one
    (baseline x86-64 SIMD), which bounds FAISS's single-query scan."""
    if "faiss.swigfaiss_avx2" in sys.modules:
        return "swigfaiss_avx2"
    return "swigfaiss (generic x86-64 build; no swigfaiss_avx2 installed)"


def best_coretype():
    """The best OpenBLAS kernel family this CPU can run, from its flags."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
            else:
                return None
    except OSError:
        return None
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def fix_blas_fallback(args):
    """Re-run this script with OPENBLAS_CORETYPE set when OpenBLAS fell
    back to generic kernels on a CPU that has better ones."""
    if args.blas_as_is or "OPENBLAS_CORETYPE" in os.environ:
        return
    core = openblas_core()
    best = best_coretype()
    if core not in ("Prescott", "Core2", "Nehalem") or best is None:
        return
    env = dict(os.environ, OPENBLAS_CORETYPE=best,
               IQDB_BENCH_BLAS_FALLBACK=core)
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--queries", required=True)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ids-out", required=True)
    ap.add_argument("--blas-as-is", action="store_true",
                    help="keep OpenBLAS's own kernel choice")
    args = ap.parse_args()
    fix_blas_fallback(args)

    xb = read_fvecs(args.base)
    xq = read_fvecs(args.queries)
    if xb.shape[1] != xq.shape[1]:
        sys.exit(f"faiss_flat.py: base dimension {xb.shape[1]} != "
                 f"query dimension {xq.shape[1]}")
    nq, k = xq.shape[0], args.k

    index = faiss.IndexFlatL2(xb.shape[1])
    index.add(xb)
    del xb  # the index holds its own copy

    # Single-query loop on one thread, warmed up first like bench_flat.
    faiss.omp_set_num_threads(1)
    for i in range(min(nq, 10)):
        index.search(xq[i:i + 1], k)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(nq):
        index.search(xq[i:i + 1], k)
    single = time.perf_counter() - t0
    single_cpu = (time.process_time() - c0) / single

    # Batch on N threads; OpenBLAS (OpenMP build) follows the same setting.
    # Best of at least 3 and at most 10 runs, as many as fit in 10 s: the
    # rule bench_flat applies to iqdb_search_batch.
    faiss.omp_set_num_threads(args.threads)
    index.search(xq[:min(nq, 50)], k)
    batch = None
    start = time.perf_counter()
    for run in range(10):
        if run >= 3 and time.perf_counter() - start > 10.0:
            break
        c0, t0 = time.process_time(), time.perf_counter()
        _, ids = index.search(xq, k)
        dt = time.perf_counter() - t0
        if batch is None or dt < batch:
            batch, batch_cpu = dt, (time.process_time() - c0) / dt
    write_ivecs(args.ids_out, ids)

    note = ""
    if "IQDB_BENCH_BLAS_FALLBACK" in os.environ:
        note = (f"OpenBLAS did not recognise this CPU and chose "
                f"{os.environ['IQDB_BENCH_BLAS_FALLBACK']} kernels; FAISS "
                f"ran with OPENBLAS_CORETYPE="
                f"{os.environ['OPENBLAS_CORETYPE']} instead "
                f"(--peer-blas-as-is keeps the fallback)")
    elif "OPENBLAS_CORETYPE" in os.environ:
        note = f"OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} " \
               f"from the environment"

    print(json.dumps({
        "peer": "faiss",
        "version": getattr(faiss, "__version__", "?"),
        "index": "IndexFlatL2",
        "n": int(index.ntotal),
        "dim": int(index.d),
        "nq": int(nq),
        "k": int(k),
        "single_threads": 1,
        "single_qps": nq / single,
        "single_cpu": single_cpu,
        "batch_threads": args.threads,
        "batch_qps": nq / batch,
        "batch_cpu": batch_cpu,
        "build": faiss_build(),
        "blas": blas_info(),
        "blas_note": note,
    }), flush=True)


if __name__ == "__main__":
    main()
