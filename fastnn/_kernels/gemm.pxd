# The GEMM every CPU kernel builds on: C = op(A) @ op(B) (+ beta*C), then bias and ReLU fused
# into the store. See src/gemm.h for the exact semantics. Use from other modules with
#     from fastnn._kernels.gemm cimport gemm
from cython cimport floating

cdef void gemm(bint transa, bint transb, int M, int N, int K,
               const floating* A, int lda, const floating* B, int ldb, floating beta,
               floating* C, int ldc, const floating* bias, int bias_mode, bint relu,
               int nthreads) noexcept nogil

# A chain of dense layers y[i] = relu[i](h @ w[i].T + b[i]) (src/gemm.h), float32.
cdef void sgemm_chain(int M, int layers, const float* x, const float* const* w,
                      const float* const* b, float* const* y, const int* fin, const int* fout,
                      const int* relu, int nthreads) noexcept nogil
