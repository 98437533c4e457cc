"""Linear layer forward and backward on top of fastnn's GEMM.

Forward is one GEMM whose epilogue adds the bias and applies ReLU while it stores y, so y is
written once. Backward applies the ReLU mask once, into a workspace, summing db in the same
pass; dx and dW are then two GEMMs reading that masked gradient.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.string cimport memset

from fastnn._kernels.gemm cimport gemm
from fastnn._kernels.runtime cimport num_threads

cdef Py_ssize_t INT_MAX = 2**31 - 1
# Below this many elements the mask pass runs on one thread.
cdef Py_ssize_t PARALLEL_MIN_SIZE = 32768
# Columns per task in the mask pass: every task owns whole columns of db, so no races and the
# same summation order (row by row, as NumPy's sum(axis=0)) for every thread count.
cdef Py_ssize_t COLUMN_BLOCK = 128


def _check_sizes(**sizes):
    for name, size in sizes.items():
        if size > INT_MAX:
            raise ValueError(f"{name} = {size} is too large for the kernels (at most 2**31 - 1)")


cdef void _gemm_or_zero(bint transa, bint transb, int M, int N, int K, const floating* A, int lda,
                        const floating* B, int ldb, floating* C, int ldc, const floating* bias,
                        int bias_mode, bint relu) noexcept nogil:
    """C = op(A) @ op(B) (+ bias, ReLU); an empty sum (K == 0) is zero."""
    cdef Py_ssize_t i, j
    cdef floating v
    if M == 0 or N == 0:
        return
    if K > 0:
        gemm(transa, transb, M, N, K, A, lda, B, ldb, 0, C, ldc, bias, bias_mode, relu,
             num_threads())
        return
    for i in range(M):
        for j in range(N):
            v = 0
            if bias_mode == 1:
                v = bias[j]
            elif bias_mode == 2:
                v = bias[i]
            if relu and v < 0:  # NaN stays NaN, as in the GEMM epilogue and the reference
                v = 0
            C[i * ldc + j] = v


def linear_forward(const floating[:, ::1] x, const floating[:, ::1] w, const floating[::1] b,
                   bint relu, floating[:, ::1] y):
    """y = x @ w.T + b (b may be None), then ReLU if relu; all in one GEMM."""
    cdef Py_ssize_t n = x.shape[0], fin = x.shape[1], fout = w.shape[0]
    cdef const floating* bias = NULL
    if w.shape[1] != fin or y.shape[0] != n or y.shape[1] != fout:
        raise ValueError(f"expected w ({fout}, {fin}) and y ({n}, {fout})")
    if b is not None:
        if b.shape[0] != fout:
            raise ValueError(f"b must have shape ({fout},), got ({b.shape[0]},)")
        if fout:
            bias = &b[0]
    _check_sizes(batch=n, in_features=fin, out_features=fout)
    if n == 0 or fout == 0:
        return
    with nogil:
        _gemm_or_zero(False, True, n, fout, fin, &x[0, 0] if fin else NULL, fin,
                      &w[0, 0] if fin else NULL, fin, &y[0, 0], fout, bias,
                      1 if bias != NULL else 0, relu)


cdef void _mask_columns(const floating* dy, const floating* y, floating* work, floating* db,
                        Py_ssize_t n, Py_ssize_t fout, Py_ssize_t start, Py_ssize_t stop,
                        bint relu) noexcept nogil:
    """db[start:stop] = column sums of the (masked) gradient; with relu, write it into work."""
    cdef Py_ssize_t i, j
    cdef floating g
    memset(db + start, 0, (stop - start) * sizeof(floating))
    for i in range(n):
        for j in range(start, stop):
            g = dy[i * fout + j]
            if relu:
                g = g * <floating>(y[i * fout + j] > 0)  # as the reference: dy * (y > 0)
                work[i * fout + j] = g
            db[j] += g


def linear_backward(const floating[:, ::1] x, const floating[:, ::1] w,
                    const floating[:, ::1] y, const floating[:, ::1] dy, bint relu,
                    floating[:, ::1] dx, floating[:, ::1] dw, floating[::1] db,
                    floating[:, ::1] work):
    """dx = g @ w (skipped when dx is None), dw = g.T @ x, db = g.sum(0), where g is dy masked
    by y > 0 when relu (written to work, which relu needs) and dy itself otherwise."""
    cdef Py_ssize_t n = x.shape[0], fin = x.shape[1], fout = w.shape[0], blocks, block
    cdef const floating* g
    cdef int threads
    if (w.shape[1] != fin or y.shape[0] != n or y.shape[1] != fout or dy.shape[0] != n
            or dy.shape[1] != fout or dw.shape[0] != fout or dw.shape[1] != fin
            or db.shape[0] != fout):
        raise ValueError(f"expected w and dw ({fout}, {fin}), y and dy ({n}, {fout}), "
                         f"db ({fout},)")
    if dx is not None and (dx.shape[0] != n or dx.shape[1] != fin):
        raise ValueError(f"dx must have shape ({n}, {fin})")
    if relu and (work is None or work.shape[0] != n or work.shape[1] != fout):
        raise ValueError(f"relu needs a work array of shape ({n}, {fout})")
    _check_sizes(batch=n, in_features=fin, out_features=fout)
    if fout == 0:
        if dx is not None and n and fin:
            memset(&dx[0, 0], 0, n * fin * sizeof(floating))
        return
    if n == 0:
        memset(&db[0], 0, fout * sizeof(floating))
        if fin:
            memset(&dw[0, 0], 0, fout * fin * sizeof(floating))
        return
    if relu:
        g = &work[0, 0]
    else:
        g = &dy[0, 0]
    blocks = (fout + COLUMN_BLOCK - 1) // COLUMN_BLOCK
    threads = num_threads() if n * fout >= PARALLEL_MIN_SIZE else 1
    with nogil:
        for block in prange(blocks, schedule="static", num_threads=threads):
            _mask_columns(&dy[0, 0], &y[0, 0], &work[0, 0] if relu else NULL, &db[0], n, fout,
                          block * COLUMN_BLOCK, min((block + 1) * COLUMN_BLOCK, fout), relu)
        if fin:
            if dx is not None:
                _gemm_or_zero(False, False, n, fin, fout, g, fout, &w[0, 0], fin, &dx[0, 0],
                              fin, NULL, 0, False)
            _gemm_or_zero(True, False, fout, fin, n, g, fout, &x[0, 0], fin, &dw[0, 0], fin,
                          NULL, 0, False)
