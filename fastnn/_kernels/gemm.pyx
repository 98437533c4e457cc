"""GEMM with a fused bias/ReLU epilogue, over fastnn's own run-time selected micro-kernels.

`gemm` (cimport it from gemm.pxd) is the nogil entry point for other kernels; `matmul` is the
checked Python entry point for tests and benchmarks; `isa()` says which path runs.
"""
import numpy as np

from cython cimport floating


cdef extern from "gemm.h" nogil:
    void fastnn_sgemm(int transa, int transb, int M, int N, int K,
                      const float *A, int lda, const float *B, int ldb, float beta,
                      float *C, int ldc, const float *bias, int bias_mode, int relu,
                      int nthreads)
    void fastnn_dgemm(int transa, int transb, int M, int N, int K,
                      const double *A, int lda, const double *B, int ldb, double beta,
                      double *C, int ldc, const double *bias, int bias_mode, int relu,
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


def _check_matrix(name, x, dtype=None):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"{name} must have the same dtype as a ({dtype}), got {x.dtype}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if max(x.shape) > _INT_MAX:
        raise ValueError(f"{name} is too large: dimensions must be < 2**31, got {x.shape}")


def matmul(a, b, transa=False, transb=False, bias=None, bias_mode=0, relu=False, out=None,
           beta=0.0, nthreads=0):
    """out = op(a) @ op(b) + beta*out, then + bias and ReLU in the same pass.

    op(a) is a.T when transa, else a (same for b). bias_mode 1 adds bias[n] to column n (bias of
    length N), 2 adds bias[m] to row m (length M). beta != 0 needs `out`, whose old contents it
    scales. nthreads 0 means OpenMP's default; the result does not depend on it. Arrays must be
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
        if not bias.flags.c_contiguous:
            raise ValueError("bias must be C-contiguous")
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        raise TypeError(f"beta must be a real number, got {beta!r}") from None
    if isinstance(nthreads, bool) or not isinstance(nthreads, (int, np.integer)) \
            or nthreads < 0:
        raise ValueError(f"nthreads must be an integer >= 0 (0: OpenMP's default), "
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
        if not out.flags.writeable:
            raise ValueError("out must be writeable")
        for name, x in (("a", a), ("b", b), ("bias", bias)):
            if x is not None and np.shares_memory(out, x):
                raise ValueError(f"out must not overlap {name}")
    if a.dtype == np.float32:
        _run[float](a, b, out, bias, transa, transb, M, N, K, beta, bias_mode, relu, nthreads)
    else:
        _run[double](a, b, out, bias, transa, transb, M, N, K, beta, bias_mode, relu, nthreads)
    return out


cdef _run(floating[:, ::1] a, floating[:, ::1] b, floating[:, ::1] out, bias, bint transa,
          bint transb, int M, int N, int K, double beta, int bias_mode, bint relu,
          int nthreads):
    # Zero-sized arrays have no element to take the address of; the C code never reads them.
    cdef floating dummy = 0
    cdef const floating *pa = &a[0, 0] if a.shape[0] * a.shape[1] else &dummy
    cdef const floating *pb = &b[0, 0] if b.shape[0] * b.shape[1] else &dummy
    cdef floating *pc = &out[0, 0] if M * N else &dummy
    cdef const floating[::1] bias_view
    cdef const floating *pbias = NULL
    if bias is not None:
        bias_view = bias
        if bias_view.shape[0]:
            pbias = &bias_view[0]
    with nogil:
        gemm(transa, transb, M, N, K, pa, max(a.shape[1], 1), pb, max(b.shape[1], 1),
             <floating>beta, pc, max(N, 1), pbias, bias_mode if pbias != NULL else 0, relu,
             nthreads)
