/*
 * core/kernels.c - run-time choice of the distance kernel table.
 *
 * The best table this CPU and OS can run is chosen once per process
 * (pthread_once), optionally capped by IQDB_ISA=scalar|avx2|avx512. The
 * same pattern as pgvector's HalfvecInit: ask the CPU at run time instead
 * of compiling with -march=native, so one binary runs everywhere.
 */
#include "config.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include "kernels_int.h"

/* Tables from the least to the most capable; a cap keeps a prefix. */
enum { ISA_SCALAR, ISA_AVX2, ISA_AVX512, ISA_COUNT };

static const char *const isa_names[ISA_COUNT] = {"scalar", "avx2",
                                                 "avx512"};

#if defined(__x86_64__)
/* XCR0, the register state the OS saves across context switches. Only
 * read when CPUID says the OS enabled XSAVE (else xgetbv faults). */
static unsigned long long os_xstate(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
        return 0;
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#endif

/* Can this CPU and OS run the table of level isa? GCC's
 * __builtin_cpu_supports already checks XCR0 (libgcc since GCC 7 only
 * reports AVX features whose register state the OS enables), but other
 * compilers' runtimes need not, so XCR0 is checked here as well. */
static int isa_usable(int isa)
{
    switch (isa) {
    case ISA_SCALAR:
        return 1;
#if defined(__x86_64__)
    case ISA_AVX2: {
        __builtin_cpu_init();
        unsigned long long xcr0 = os_xstate();
        return __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma") &&
               (xcr0 & 0x6) == 0x6; /* SSE and AVX (YMM) state */
    }
    case ISA_AVX512: {
        __builtin_cpu_init();
        unsigned long long xcr0 = os_xstate();
        return isa_usable(ISA_AVX2) && __builtin_cpu_supports("avx512f") &&
               __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") &&
               (xcr0 & 0xe6) == 0xe6; /* + opmask, ZMM0-15 high, ZMM16-31 */
    }
#endif
    default:
        return 0;
    }
}

static const iqdb_kernels *isa_table(int isa)
{
    switch (isa) {
    case ISA_SCALAR:
        return &iqdb__kernels_scalar;
#if defined(__x86_64__)
    case ISA_AVX2:
        return &iqdb__kernels_avx2;
    case ISA_AVX512:
        return &iqdb__kernels_avx512;
#endif
    default:
        return NULL;
    }
}

static int isa_index(const char *name)
{
    for (int i = 0; i < ISA_COUNT; i++)
        if (name != NULL && strcmp(name, isa_names[i]) == 0)
            return i;
    return -1;
}

const iqdb_kernels *iqdb__kernels_named(const char *isa)
{
    int i = isa_index(isa);
    if (i < 0 || !isa_usable(i))
        return NULL;
    return isa_table(i);
}

const iqdb_kernels *iqdb__kernels_pick(const char *cap)
{
    int top = isa_index(cap);
    if (top < 0)
        top = ISA_COUNT - 1;
    for (int i = top; i > ISA_SCALAR; i--)
        if (isa_usable(i) && isa_table(i) != NULL)
            return isa_table(i);
    return &iqdb__kernels_scalar;
}

static const iqdb_kernels *chosen;
static pthread_once_t chosen_once = PTHREAD_ONCE_INIT;

static void choose(void)
{
    /* Plain getenv: the cap can only select a table this CPU runs, so it
     * is harmless even in a privileged process. */
    chosen = iqdb__kernels_pick(getenv("IQDB_ISA"));
}

const iqdb_kernels *iqdb__kernels(void)
{
    pthread_once(&chosen_once, choose);
    return chosen;
}

float iqdb__finalize(int metric, float raw)
{
    if (metric == IQDB_M_EUCLIDEAN)
        return sqrtf(raw > 0.0f ? raw : 0.0f);
    return raw;
}
