/* fastnn GEMM: packed-panel SGEMM with run-time selected micro-kernels
   (AVX-512, AVX2+FMA, portable C) and a fused bias/ReLU epilogue.

   C[M,N] = op(A) @ op(B) + (beta != 0 ? beta*C : 0), then the epilogue in the same store pass:
   bias_mode 0: none, 1: C[m,n] += bias[n] (linear layers), 2: C[m,n] += bias[m] (conv, NCHW rows);
   relu != 0: C = max(C, 0). Row-major; lda/ldb/ldc are row strides in elements.
   op(A) is A (M x K) if transa == 0, else A is stored K x M and transposed. Same for B (K x N / N x K).

   nthreads <= 0 means omp_get_max_threads().  The result is bitwise identical for every thread
   count: the blocking of K and of the output tiles depends only on the shape and the ISA.
   With beta == 0, C is never read (it may hold NaN).  C must not overlap A, B or bias. */
#ifndef FASTNN_GEMM_H
#define FASTNN_GEMM_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

void fastnn_sgemm(int transa, int transb, int M, int N, int K,
                  const float *A, int lda, const float *B, int ldb, float beta,
                  float *C, int ldc, const float *bias, int bias_mode, int relu, int nthreads);

/* float64 is for gradient checks: correct and deterministic, not tuned. */
/* A chain of dense layers: h = x, then for each layer i, h = y_i = h @ W_i^T + b_i (ReLU'd if
   asked). table holds one row of 6 int64 per layer: the addresses of W_i (fout x fin), b_i (or
   0) and y_i (M x fout), fin, fout, relu. With few rows all layers run in one parallel region
   (src/gemm_chain.c); bitwise the same as one fastnn_sgemm call per layer. */
void fastnn_sgemm_chain(int M, int layers, const float *x, const int64_t *table, int nthreads);

void fastnn_dgemm(int transa, int transb, int M, int N, int K,
                  const double *A, int lda, const double *B, int ldb, double beta,
                  double *C, int ldc, const double *bias, int bias_mode, int relu, int nthreads);

/* "avx512", "avx2" or "portable": the path fastnn_sgemm runs.  Chosen once from the CPU's
   features; the environment variable FASTNN_GEMM_ISA=avx512|avx2|portable picks a lower one. */
const char *fastnn_gemm_isa(void);

/* Testing hook: select a path by name (clamped to what the CPU supports); NULL or "" restores the
   default choice.  Returns the name of the path now in use.  Not thread-safe against concurrent
   GEMM calls. */
const char *fastnn_gemm_set_isa(const char *name);

#ifdef __cplusplus
}
#endif

#endif
