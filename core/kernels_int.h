/*
 * core/kernels_int.h - distance kernels and their run-time dispatch.
 *
 * kernels.c picks, once per process, the best kernel table this CPU runs:
 * AVX-512F, then AVX2+FMA, then portable scalar code. Each table lives in
 * its own file, compiled for its instruction set with function target
 * attributes (never -march=native), so one binary runs on any x86-64 and
 * the scalar path builds anywhere.
 */
#ifndef IQDB_KERNELS_INT_H
#define IQDB_KERNELS_INT_H

#include <iqdb/plugin.h>

/* The table in use. The environment variable IQDB_ISA=scalar|avx2|avx512
 * caps the choice (for tests and benchmarks); it never picks a table the
 * CPU cannot run. Thread-safe. */
const iqdb_kernels *iqdb__kernels(void);

/* A table by name ("scalar", "avx2", "avx512"), or NULL when this CPU (or
 * this build) cannot run it. */
const iqdb_kernels *iqdb__kernels_named(const char *isa);

/* The tables; a table that this build could not compile is NULL-valued
 * through iqdb__kernels_named. */
extern const iqdb_kernels iqdb__kernels_scalar;
#if defined(__x86_64__)
extern const iqdb_kernels iqdb__kernels_avx2;
extern const iqdb_kernels iqdb__kernels_avx512;
#endif

/* Reported distance from a raw one (shared by every table). */
float iqdb__finalize(int metric, float raw);

/* ---- shared by the kernel files (kernels*.c) and their tests ---- */

/* Cosine distance from the three sums of one pass over a and b (a.b,
 * |a|^2, |b|^2): 1 - dot / (sqrt(na) sqrt(nb)) clamped to [0, 2], exactly
 * 1 when a or b is all zeros. Sums that float cannot hold (non-finite, or
 * a squared norm below FLT_MIN) are recomputed from a and b in double, so
 * finite input never gives NaN. A function of the sums, so that every
 * caller passing the same sums gets the same bits. */
float iqdb__cosine_finish(float dot, float na, float nb, const float *a,
                          const float *b, size_t dim);

/* The table that IQDB_ISA=cap would select on this CPU (cap NULL, empty
 * or unknown: no cap). iqdb__kernels() returns this for
 * getenv("IQDB_ISA"), computed once; tests call it with other caps. */
const iqdb_kernels *iqdb__kernels_pick(const char *cap);

#endif /* IQDB_KERNELS_INT_H */
