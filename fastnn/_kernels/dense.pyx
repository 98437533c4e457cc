"""Linear layer forward and backward on top of fastnn's GEMM.

Forward is one GEMM whose epilogue adds the bias and applies ReLU while it stores y, so y is
written once. Backward applies the ReLU mask once, into a workspace, summing db in the same
pass; dx and dW are then two GEMMs reading that masked gradient.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memset

from fastnn._kernels.gemm cimport gemm, sgemm_chain
from fastnn._kernels.runtime cimport resolve_threads

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
                        int bias_mode, bint relu, int nthreads) noexcept nogil:
    """C = op(A) @ op(B) (+ bias, ReLU); an empty sum (K == 0) is zero."""
    cdef Py_ssize_t i, j
    cdef floating v
    if M == 0 or N == 0:
        return
    if K > 0:
        gemm(transa, transb, M, N, K, A, lda, B, ldb, 0, C, ldc, bias, bias_mode, relu, nthreads)
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
                   bint relu, floating[:, ::1] y, int nthreads=0):
    """y = x @ w.T + b (b may be None), then ReLU if relu; all in one GEMM on `nthreads`
    threads (0: fastnn's count)."""
    cdef int nt = resolve_threads(nthreads)
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
                      1 if bias != NULL else 0, relu, nt)


cdef extern from "dense_mask.h" nogil:
    void fastnn_mask_columns_f32(const float* dy, const float* y, float* work, float* db,
                                 Py_ssize_t n, Py_ssize_t ld, Py_ssize_t start, Py_ssize_t stop)
    void fastnn_mask_columns_f64(const double* dy, const double* y, double* work, double* db,
                                 Py_ssize_t n, Py_ssize_t ld, Py_ssize_t start, Py_ssize_t stop)
    void fastnn_mask_columns_inplace_f32(float* g, const float* y, float* db, Py_ssize_t n,
                                         Py_ssize_t ld, Py_ssize_t start, Py_ssize_t stop)
    void fastnn_mask_columns_inplace_f64(double* g, const double* y, double* db, Py_ssize_t n,
                                         Py_ssize_t ld, Py_ssize_t start, Py_ssize_t stop)
    void fastnn_column_sums_f32(const float* g, float* db, Py_ssize_t n, Py_ssize_t ld,
                                Py_ssize_t start, Py_ssize_t stop)
    void fastnn_column_sums_f64(const double* g, double* db, Py_ssize_t n, Py_ssize_t ld,
                                Py_ssize_t start, Py_ssize_t stop)


cdef void _mask_columns(const floating* dy, const floating* y, floating* work, floating* db,
                        Py_ssize_t n, Py_ssize_t fout, Py_ssize_t start, Py_ssize_t stop,
                        bint relu) noexcept nogil:
    """db[start:stop] = column sums of the (masked) gradient; with relu, write it into work
    (which may be dy itself). The loops are C's (src/dense_mask.h): vectorized."""
    if floating is float:
        if not relu:
            fastnn_column_sums_f32(dy, db, n, fout, start, stop)
        elif work == dy:
            fastnn_mask_columns_inplace_f32(work, y, db, n, fout, start, stop)
        else:
            fastnn_mask_columns_f32(dy, y, work, db, n, fout, start, stop)
    else:
        if not relu:
            fastnn_column_sums_f64(dy, db, n, fout, start, stop)
        elif work == dy:
            fastnn_mask_columns_inplace_f64(work, y, db, n, fout, start, stop)
        else:
            fastnn_mask_columns_f64(dy, y, work, db, n, fout, start, stop)


def linear_backward(const floating[:, ::1] x, const floating[:, ::1] w,
                    const floating[:, ::1] y, const floating[:, ::1] dy, bint relu,
                    floating[:, ::1] dx, floating[:, ::1] dw, floating[::1] db,
                    floating[:, ::1] work, int nthreads=0):
    """dx = g @ w (skipped when dx is None), dw = g.T @ x, db = g.sum(0), where g is dy masked
    by y > 0 when relu (written to work, which relu needs) and dy itself otherwise; on
    `nthreads` threads (0: fastnn's count)."""
    cdef Py_ssize_t n = x.shape[0], fin = x.shape[1], fout = w.shape[0], blocks, block
    cdef const floating* g
    cdef int nt = resolve_threads(nthreads), threads
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
    threads = nt if n * fout >= PARALLEL_MIN_SIZE else 1
    with nogil:
        for block in prange(blocks, schedule="static", num_threads=threads):
            _mask_columns(&dy[0, 0], &y[0, 0], &work[0, 0] if relu else NULL, &db[0], n, fout,
                          block * COLUMN_BLOCK, min((block + 1) * COLUMN_BLOCK, fout), relu)
        if fin:
            if dx is not None:
                _gemm_or_zero(False, False, n, fin, fout, g, fout, &w[0, 0], fin, &dx[0, 0],
                              fin, NULL, 0, False, nt)
            _gemm_or_zero(True, False, fout, fin, n, g, fout, &x[0, 0], fin, &dw[0, 0], fin,
                          NULL, 0, False, nt)


# ---- a chain of Linear layers in one call (inference) -------------------------------------
# Inference on a few samples is all overhead in Python: one call here runs every layer of an
# MLP, each a GEMM with bias and ReLU in its store, and the row argmax at the end.
# `table` rows are (weight address, bias address or 0, output address, in_features,
# out_features, relu), written by the caller (fastnn.inference) from arrays it checked and
# keeps alive; every output buffer has room for x's rows.

cdef extern from "argmax.h" nogil:
    Py_ssize_t fastnn_argmax_f32(const float* row, Py_ssize_t classes)
    Py_ssize_t fastnn_argmax_f64(const double* row, Py_ssize_t classes)


cdef extern from "finite.h" nogil:
    bint fastnn_all_finite32(const uint32_t* bits, size_t n)
    bint fastnn_all_finite64(const uint64_t* bits, size_t n)


cdef bint _all_finite(const floating* a, Py_ssize_t size) noexcept nogil:
    """No NaN or infinity in a[:size] (src/finite.h: an integer test of the exponent bits)."""
    if floating is float:
        return fastnn_all_finite32(<const uint32_t*>a, size)
    else:
        return fastnn_all_finite64(<const uint64_t*>a, size)


def chain_forward(const floating[:, ::1] x, const int64_t[:, ::1] table, int64_t[::1] labels,
                  bint check_finite=True, int nthreads=0):
    """Run the layers of `table` on x, each reading the previous one's output; with labels
    (None or n int64s) also write each row's argmax of the last output there. With
    check_finite, x holding NaN or infinity raises ValueError before any work. The table's
    addresses are arrays of x's type (the caller checked them): x's type picks the kernel."""
    cdef Py_ssize_t n = x.shape[0], layers = table.shape[0], i, r, size = x.shape[0] * x.shape[1]
    cdef bint finite = True
    cdef const floating* h = &x[0, 0] if n and x.shape[1] else NULL
    cdef Py_ssize_t fout
    cdef int nt = resolve_threads(nthreads)
    if table.shape[1] != 6 or layers < 1:
        raise ValueError("table must have one row of 6 entries per layer")
    if n > INT_MAX:
        raise ValueError(f"batch = {n} is too large for the kernels (at most 2**31 - 1)")
    if table[0, 3] != x.shape[1]:
        raise ValueError(f"x must have {table[0, 3]} features, got {x.shape[1]}")
    for i in range(layers):
        if table[i, 3] < 1 or table[i, 4] < 1 or table[i, 3] > INT_MAX or table[i, 4] > INT_MAX:
            raise ValueError(f"layer {i} must have 1 to 2**31 - 1 features in and out")
        if i and table[i, 3] != table[i - 1, 4]:
            raise ValueError(f"layer {i} takes {table[i, 3]} features, the previous one gives "
                             f"{table[i - 1, 4]}")
    if labels is not None and labels.shape[0] != n:
        raise ValueError(f"labels must have room for {n} rows")
    if n == 0:
        return
    if check_finite:
        with nogil:
            finite = _all_finite(h, size)
        if not finite:
            raise ValueError("x holds NaN or infinite values")
    with nogil:
        if floating is float:  # one parallel region for all layers when there are few rows
            sgemm_chain(<int>n, <int>layers, &x[0, 0], &table[0, 0], nt)
        else:
            for i in range(layers):
                _gemm_or_zero(False, True, <int>n, <int>table[i, 4], <int>table[i, 3], h,
                              <int>table[i, 3], <const floating*><size_t>table[i, 0],
                              <int>table[i, 3], <floating*><size_t>table[i, 2],
                              <int>table[i, 4], <const floating*><size_t>table[i, 1],
                              1 if table[i, 1] != 0 else 0, table[i, 5] != 0, nt)
                h = <const floating*><size_t>table[i, 2]
        h = <const floating*><size_t>table[layers - 1, 2]
        fout = table[layers - 1, 4]
        if labels is not None:
            for r in range(n):
                if floating is float:
                    labels[r] = fastnn_argmax_f32(h + r * fout, fout)
                else:
                    labels[r] = fastnn_argmax_f64(h + r * fout, fout)
