"""GEMM with a fused bias/ReLU epilogue, over fastnn's own run-time selected micro-kernels.

`gemm` (cimport it from gemm.pxd) is the nogil entry point for other kernels; `matmul` is the
checked Python entry point for tests and benchmarks; `isa()` says which path runs.
"""
import numpy as np

cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t

from fastnn._kernels.runtime cimport resolve_threads

cnp.import_array()


cdef extern from "gemm.h" nogil:
    void fastnn_sgemm(int transa, int transb, int M, int N, int K,
                      const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc, const float *bias, int bias_mode, int relu,
                      int nthreads)
    void fastnn_dgemm(int transa, int transb, int M, int N, int K,
                      const double *A, int lda, const double *B, int ldb, double beta,
                      double *C, int ldc, const double *bias, int bias_mode, int relu,
                      int nthreads)
    void fastnn_sgemm_chain(int M, int layers, const float *x, const int64_t *table,
                            int nthreads)
    const char *fastnn_gemm_isa()
    const char *fastnn_gemm_set_isa(const char *name)


cdef void gemm(bint transa, bint transb, int M, int N, int K,
               const floating* A, int lda, const floating* B, int ldb, floating beta,
               floating* C, int ldc, const floating* bias, int bias_mode, bint relu,
               int nthreads) noexcept nogil:
    if floating is float:
        fastnn_sgemm(transa, transb, M, N, K, A, lda, B, ldb, beta, C, ldc, bias, bias_mode,
                     relu, nthreads)
    else:
        fastnn_dgemm(transa, transb, M, N, K, A, lda, B, ldb, beta, C, ldc, bias, bias_mode,
                     relu, nthreads)


cdef void sgemm_chain(int M, int layers, const float* x, const int64_t* table,
                      int nthreads) noexcept nogil:
    fastnn_sgemm_chain(M, layers, x, table, nthreads)


ISAS = ("avx512", "avx2", "portable")
_INT_MAX = 2**31 - 1


def isa():
    """The float32 path in use: "avx512", "avx2" or "portable"."""
    return fastnn_gemm_isa().decode()


def _set_isa(name=None):
    """Testing hook: run the `name` path (clamped to what this CPU supports); None restores the
    default. Returns the path now in use. Do not call while another thread runs a GEMM."""
    if name is not None and name not in ISAS:
        raise ValueError(f"isa must be one of {ISAS} or None, got {name!r}")
    cdef bytes encoded = b"" if name is None else name.encode()
    return fastnn_gemm_set_isa(encoded).decode()


cdef bint _overlap(cnp.ndarray x, cnp.ndarray y):
    """Whether two C-contiguous arrays share memory (their byte ranges intersect: exact for
    contiguous arrays, and much cheaper than numpy.shares_memory)."""
    cdef size_t x0 = <size_t>cnp.PyArray_DATA(x), y0 = <size_t>cnp.PyArray_DATA(y)
    cdef size_t xn = <size_t>cnp.PyArray_NBYTES(x), yn = <size_t>cnp.PyArray_NBYTES(y)
    return xn > 0 and yn > 0 and x0 < y0 + yn and y0 < x0 + xn


_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)


cdef _check_matrix(str name, x, dtype=None):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    cdef cnp.ndarray arr = x
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    if arr.dtype != _FLOAT32 and arr.dtype != _FLOAT64:
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(f"{name} must have the same dtype as a ({dtype}), got {x.dtype}")
    if not cnp.PyArray_IS_C_CONTIGUOUS(arr):
        raise ValueError(f"{name} must be C-contiguous")
    if arr.shape[0] > _INT_MAX or arr.shape[1] > _INT_MAX:
        raise ValueError(f"{name} is too large: dimensions must be < 2**31, got {x.shape}")


def matmul(a, b, transa=False, transb=False, bias=None, bias_mode=0, relu=False, out=None,
           beta=0.0, nthreads=0):
    """out = op(a) @ op(b) + beta*out, then + bias and ReLU in the same pass.

    op(a) is a.T when transa, else a (same for b). bias_mode 1 adds bias[n] to column n (bias of
    length N), 2 adds bias[m] to row m (length M). beta != 0 needs `out`, whose old contents it
    scales. nthreads 0 means fastnn's count; the result does not depend on it. Arrays must be
    C-contiguous 2-D float32 or float64, all of the same dtype. Returns `out` (new if None).
    """
    _check_matrix("a", a)
    _check_matrix("b", b, a.dtype)
    transa, transb, relu = bool(transa), bool(transb), bool(relu)
    M, K = (a.shape[1], a.shape[0]) if transa else a.shape
    Kb, N = (b.shape[1], b.shape[0]) if transb else b.shape
    if K != Kb:
        raise ValueError(f"inner dimensions differ: op(a) is {M}x{K} but op(b) is {Kb}x{N}")
    if isinstance(bias_mode, bool) or not isinstance(bias_mode, (int, np.integer)) \
            or bias_mode not in (0, 1, 2):
        raise ValueError(f"bias_mode must be 0 (none), 1 (per column) or 2 (per row), "
                         f"got {bias_mode!r}")
    if (bias is None) != (bias_mode == 0):
        raise ValueError("bias and bias_mode go together: give a bias with bias_mode 1 or 2, "
                         "or neither")
    if bias is not None:
        if not isinstance(bias, np.ndarray):
            raise TypeError(f"bias must be a numpy.ndarray, got {type(bias).__name__}")
        want = N if bias_mode == 1 else M
        if bias.shape != (want,):
            raise ValueError(f"bias must have shape ({want},) for bias_mode {bias_mode}, "
                             f"got {bias.shape}")
        if bias.dtype != a.dtype:
            raise TypeError(f"bias must have the same dtype as a ({a.dtype}), got {bias.dtype}")
        if not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>bias):
            raise ValueError("bias must be C-contiguous")
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        raise TypeError(f"beta must be a real number, got {beta!r}") from None
    if isinstance(nthreads, bool) or not isinstance(nthreads, (int, np.integer)) \
            or nthreads < 0:
        raise ValueError(f"nthreads must be an integer >= 0 (0: fastnn's count), "
                         f"got {nthreads!r}")
    nthreads = min(int(nthreads), 1024)
    if out is None:
        if beta != 0.0:
            raise ValueError("beta != 0 scales the existing out, so out must be given")
        out = np.empty((M, N), dtype=a.dtype)
    else:
        _check_matrix("out", out, a.dtype)
        if out.shape != (M, N):
            raise ValueError(f"out must have shape ({M}, {N}), got {out.shape}")
        if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>out):
            raise ValueError("out must be writeable")
        for name, x in (("a", a), ("b", b), ("bias", bias)):
            if x is not None and _overlap(out, x):
                raise ValueError(f"out must not overlap {name}")
    # raw pointers: memoryviews would cost microseconds per call. Zero-sized arrays still have
    # a valid data pointer, and the C code reads nothing when a dimension is zero.
    cdef void *pa = cnp.PyArray_DATA(<cnp.ndarray>a)
    cdef void *pb = cnp.PyArray_DATA(<cnp.ndarray>b)
    cdef void *pc = cnp.PyArray_DATA(<cnp.ndarray>out)
    cdef void *pbias = NULL if bias is None else cnp.PyArray_DATA(<cnp.ndarray>bias)
    cdef int lda = max(a.shape[1], 1), ldb = max(b.shape[1], 1), ldc = max(N, 1)
    cdef int m = M, n = N, k = K, mode = bias_mode, threads = resolve_threads(nthreads)
    cdef bint ta = transa, tb = transb, r = relu
    cdef double beta_c = beta
    if a.dtype == np.float32:
        with nogil:
            fastnn_sgemm(ta, tb, m, n, k, <const float *>pa, lda, <const float *>pb, ldb,
                         <float>beta_c, <float *>pc, ldc, <const float *>pbias, mode, r,
                         threads)
    else:
        with nogil:
            fastnn_dgemm(ta, tb, m, n, k, <const double *>pa, lda, <const double *>pb, ldb,
                         beta_c, <double *>pc, ldc, <const double *>pbias, mode, r, threads)
    return out
