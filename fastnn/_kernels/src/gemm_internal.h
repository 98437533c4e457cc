/* Shared between gemm.c (dispatch, float64) and the per-ISA float32 paths. Not a public header. */
#ifndef FASTNN_GEMM_INTERNAL_H
#define FASTNN_GEMM_INTERNAL_H

#include <stddef.h>

/* The arguments of one fastnn_sgemm call, nthreads already resolved to >= 1. */
typedef struct {
    int transa, transb, M, N, K;
    const float *A; ptrdiff_t lda;
    const float *B; ptrdiff_t ldb;
    float beta;
    float *C; ptrdiff_t ldc;
    const float *bias; int bias_mode, relu;
    int nthreads;
} gk_sgemm_args;

/* Tile shapes of the x86 paths, here so that the self-test can emulate them on any CPU. */
#define GK_AVX512_MR 8
#define GK_AVX512_NV 2      /* NR = 2 x 16 floats */
#define GK_AVX2_MR 6
#define GK_AVX2_NV 2        /* NR = 2 x 8 floats */

void fastnn_sgemm_avx512(const gk_sgemm_args *args);
void fastnn_sgemm_avx2(const gk_sgemm_args *args);
void fastnn_sgemm_portable(const gk_sgemm_args *args);

/* The plain triple loop over rows [mb, me) and columns [nb, ne) of C, used only when the
   panels' scratch memory cannot be had. */
void gk_sgemm_unpacked(const gk_sgemm_args *g, int mb, int me, int nb, int ne);

/* Split an M x N output into tm x tn thread blocks (tm * tn <= nthreads), so that each block
   is worth a thread and the packing work, tn*M + tm*N panels, is smallest. Only the shape
   decides which tiles exist, so the split never changes a result, only who computes it. */
void gk_thread_grid(int M, int N, int K, int mr, int nr, int nthreads, int *tm, int *tn);

/* [*begin, *end) of part `part` of `parts` over `len` elements, cut at multiples of `unit`. */
void gk_split(int len, int unit, int parts, int part, int *begin, int *end);

/* A per-thread scratch buffer of at least nbytes, 64-byte aligned, kept between calls so that a
   GEMM does not call malloc. Release with gk_scratch_release (a no-op where thread-local
   storage keeps the buffer). Returns NULL when out of memory. */
void *gk_scratch(size_t nbytes);
void gk_scratch_release(void *p);

#endif
