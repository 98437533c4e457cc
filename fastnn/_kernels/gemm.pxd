# The GEMM every CPU kernel builds on: C = op(A) @ op(B) (+ beta*C), then bias and ReLU fused
# into the store. See src/gemm.h for the exact semantics. Use from other modules with
#     from fastnn._kernels.gemm cimport gemm
from cython cimport floating
from libc.stdint cimport int64_t

cdef void gemm(bint transa, bint transb, int M, int N, int K,
               const floating* A, int lda, const floating* B, int ldb, floating beta,
               floating* C, int ldc, const floating* bias, int bias_mode, bint relu,
               int nthreads) noexcept nogil

# A chain of dense layers, float32: `table` rows are (W, b or 0, y addresses, fin, fout,
# relu), see src/gemm.h.
cdef void sgemm_chain(int M, int layers, const float* x, const int64_t* table,
                      int nthreads) noexcept nogil
