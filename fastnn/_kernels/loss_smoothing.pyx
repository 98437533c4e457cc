"""Softmax cross-entropy against label-smoothed targets, loss and gradient in one sweep per row.

The target of a row is (1 - smoothing) on its label plus smoothing / classes on every class.
Rows run in parallel, each written by one thread; the mean is summed serially in row order, so
the loss is the same for every thread count. The thread count is an argument.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastnn._kernels.runtime cimport threads_for
from libc.math cimport exp, log
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

cdef Py_ssize_t PARALLEL_MIN_SIZE = 16384


cdef inline double _row(const floating* z, Py_ssize_t label, Py_ssize_t classes,
                        double smoothing, floating* d, double scale) noexcept nogil:
    """Write scale * (softmax(z) - target) into d; return the row's smoothed cross-entropy.
    d may be z itself: every z[j] is read before d[j] is written."""
    cdef Py_ssize_t j
    cdef double zmax = z[0], total = 0.0, z_sum = 0.0, p, norm, z_label = z[label]
    cdef double off = smoothing / classes
    for j in range(1, classes):
        if z[j] > zmax:
            zmax = z[j]
    for j in range(classes):
        z_sum = z_sum + z[j]
        p = exp(z[j] - zmax)
        d[j] = <floating>p
        total = total + p
    norm = scale / total
    for j in range(classes):
        d[j] = <floating>(d[j] * norm - scale * off)
    d[label] -= <floating>(scale * (1.0 - smoothing))
    # log-sum-exp minus the target-weighted logits (the targets sum to 1)
    return log(total) + zmax - (1.0 - smoothing) * z_label - off * z_sum


def smoothed_cross_entropy(const floating[:, ::1] logits, const int64_t[::1] labels,
                           double smoothing, floating[:, ::1] dlogits, int nthreads):
    """Mean smoothed cross-entropy; writes d(mean loss)/d(logits) into dlogits."""
    cdef Py_ssize_t n = logits.shape[0], classes = logits.shape[1], i
    cdef double total = 0.0, scale
    cdef double* row_loss
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    if n < 1 or classes < 1:
        raise ValueError(f"logits must have at least one row and one class, got ({n}, {classes})")
    if labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},), got ({labels.shape[0]},)")
    if dlogits.shape[0] != n or dlogits.shape[1] != classes:
        raise ValueError(f"dlogits must have shape ({n}, {classes})")
    for i in range(n):
        if labels[i] < 0 or labels[i] >= classes:
            raise ValueError(f"labels must be in [0, {classes}), found {labels[i]}")
    row_loss = <double*>malloc(n * sizeof(double))
    if row_loss == NULL:
        raise MemoryError()
    scale = 1.0 / n
    cdef int nt = threads_for(n * classes, PARALLEL_MIN_SIZE, nthreads)
    with nogil:
        for i in prange(n, schedule="static", num_threads=nt):
            row_loss[i] = _row(&logits[i, 0], labels[i], classes, smoothing, &dlogits[i, 0],
                               scale)
        for i in range(n):
            total += row_loss[i]
    free(row_loss)
    return total / n
