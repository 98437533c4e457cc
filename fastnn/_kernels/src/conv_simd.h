/* What fastnn's conv kernels share: 8-float GCC vectors, the helpers the per-ISA kernel files use
   on them, and the run-time choice between the AVX2+FMA and the portable build of each kernel.

   A kernel file writes its loops once in an "_impl.h" over these helpers and includes it twice,
   once with WN(name) = name_avx2 and WTARGET = __attribute__((target("avx2,fma"))) (WN_AVX2 1)
   and once with WN(name) = name_portable and WTARGET empty (WN_AVX2 0). The portable build is
   plain C on the same vector types (SSE2 on x86-64, whatever the compiler has elsewhere). */
#ifndef FASTNN_CONV_SIMD_H
#define FASTNN_CONV_SIMD_H

#include <stddef.h>
#include <string.h>

#ifdef __cplusplus
extern "C" {
#endif

/* 1 where the compiler has GCC vector extensions (GCC, clang); the kernels exist only then. */
int fastnn_conv_simd_available(void);

/* "avx512", "avx2" or "portable": the build of the kernels that runs (chosen once from the CPU's
   features; FASTNN_CONV_ISA=avx2 or portable in the environment caps it); "none" without vector
   extensions. "avx512" adds AVX-512 kernels where a file has them (conv_direct_avx512.h) and
   runs the AVX2 build elsewhere. */
const char *fastnn_conv_isa(void);

/* Testing hook: "avx512", "avx2" or "portable" (clamped to what the CPU has); NULL or ""
   restores the default. Returns the build now in use. Not safe while another thread runs a
   convolution. */
const char *fastnn_conv_set_isa(const char *name);

/* 1 when the AVX2 (or AVX-512) build runs. */
int fastnn_conv_use_avx2(void);

/* 1 when the AVX-512 kernels run. */
int fastnn_conv_use_avx512(void);

#ifdef __cplusplus
}
#endif

#ifdef _OPENMP
#include <omp.h>
static inline int conv_thread_num(void) { return omp_get_thread_num(); }
static inline int conv_num_threads(void) { return omp_get_num_threads(); }
static inline int conv_threads(int nthreads) { return nthreads > 0 ? nthreads : omp_get_max_threads(); }
#else
static inline int conv_thread_num(void) { return 0; }
static inline int conv_num_threads(void) { return 1; }
static inline int conv_threads(int nthreads) { (void)nthreads; return 1; }
#endif

static inline size_t conv_round16(size_t n) { return (n + 15) & ~(size_t)15; }

/* The threads of a parallel loop over `units` equal items: no more than there are items, so
   that a batch-1 call runs on the calling thread alone instead of waking (and, on a busy
   machine, waiting for) threads that get nothing to do. */
static inline int conv_team(int nthreads, int units) { return units < nthreads ? (units > 0 ? units : 1) : nthreads; }

/* A sample's direct convolution is split over the threads (fewer samples than threads) only
   from this many multiply-adds: below it, waking a thread costs more than it saves (the
   mnist CNN's first layer, 0.46M, splits: batch-1 CNN predict 57-60 -> 49 us on 2 threads;
   LeNet-5's, 0.12M, does not). */
#define CONV_SPLIT_MACS 200000.0

/* Parts a sample's `co` output channels are cut into, at whole blocks of `block` channels:
   with fewer samples than threads and a sample worth splitting (`macs` multiply-adds), as
   many as threads (or blocks); otherwise one. */
static inline int conv_sample_parts(int n, int co, int block, double macs, int nthreads)
{
    int blocks = (co + block - 1) / block;
    if (n >= nthreads || macs < CONV_SPLIT_MACS)
        return 1;
    return nthreads < blocks ? nthreads : blocks;
}

/* Output channels [*begin, *end) of part `part` of `parts` (conv_sample_parts). */
static inline void conv_part_channels(int co, int block, int part, int parts, int *begin,
                                      int *end)
{
    int blocks = (co + block - 1) / block;
    *begin = block * (blocks * part / parts);
    *end = block * (blocks * (part + 1) / parts);
    if (*end > co)
        *end = co;
}

/* Workspaces start at the first 64-byte boundary of the caller's buffer: callers add this many
   floats to the size they ask for. */
#define CONV_ALIGN_SLACK 16
static inline float *conv_align(float *work)
{
    return (float *)(((size_t)work + 63) & ~(size_t)63);
}

#if defined(__GNUC__) || defined(__clang__)
#define CONV_HAVE_VECTORS 1

typedef float v8 __attribute__((vector_size(32)));
typedef int v8i __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias));

#define vload(p) ((v8)(*(const v8u *)(p)))
#define vstore(p, v) (*(v8u *)(p) = (v))
#define vzero() ((v8){0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f})
#define vbroadcast(x) __extension__({ float x_ = (x); (v8){x_, x_, x_, x_, x_, x_, x_, x_}; })
/* max(v, 0) that keeps NaN, as np.maximum does */
#define vmax0(v) __extension__({ v8 v_ = (v); (v8)((v8i)v_ & ~(v8i)(v_ < vzero())); })

#if defined(__clang__)
#define WN_UNROLL _Pragma("unroll")
#else
#define WN_UNROLL _Pragma("GCC unroll 16")
#endif

#if defined(__x86_64__) || defined(__i386__)
#define CONV_HAVE_AVX2 1
#include <immintrin.h>
#else
#define CONV_HAVE_AVX2 0
#endif

#else
#define CONV_HAVE_VECTORS 0
#define CONV_HAVE_AVX2 0
#endif

#endif
