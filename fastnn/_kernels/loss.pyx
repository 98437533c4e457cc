"""Fused softmax cross-entropy, plain or against label-smoothed targets: per-row loss and
gradient in one sweep over the row.

With smoothing s, a row's target is (1 - s) on its label plus s / classes on every class.

Stable: every row is shifted by its maximum before exp, so logits of +-1e4 give a finite loss
and gradient. Rows run in parallel; the mean is then summed serially in row order, so the loss
is the same for every thread count.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport exp, expf, log
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from fastnn._kernels.runtime cimport threads_for

# Below this many logits one thread is faster than waking the others.
cdef Py_ssize_t PARALLEL_MIN_SIZE = 16384


cdef inline double _row(const floating* z, Py_ssize_t label, Py_ssize_t classes,
                        floating* d, double scale) noexcept nogil:
    """Write scale * (softmax(z) - onehot(label)) into d; return the row's cross-entropy.
    d may be z itself (an in-place gradient): each z[j] is read before d[j] is written."""
    cdef Py_ssize_t j
    cdef double zmax = z[0], z_label = z[label], total = 0.0, p, norm
    for j in range(1, classes):
        if z[j] > zmax:
            zmax = z[j]
    for j in range(classes):
        if floating is float:  # float32 exp is accurate to float32 and twice as fast
            p = expf(z[j] - <float>zmax)
        else:
            p = exp(z[j] - zmax)
        d[j] = <floating>p
        total += p
    norm = scale / total
    for j in range(classes):
        d[j] = <floating>(d[j] * norm)
    d[label] -= <floating>scale
    return log(total) + zmax - z_label


cdef inline double _smoothed_row(const floating* z, Py_ssize_t label, Py_ssize_t classes,
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


def softmax_cross_entropy(const floating[:, ::1] logits, const int64_t[::1] labels,
                          floating[:, ::1] dlogits, int nthreads=0):
    """Mean cross-entropy of softmax(logits) against labels; writes d(mean loss)/d(logits).

    labels are checked again here (cheaply, serially) so that no label can make the kernel read
    or write outside the row, whatever the caller checked.
    """
    return _mean_loss(logits, labels, dlogits, False, 0.0, nthreads)


cdef double _mean_loss(const floating[:, ::1] logits, const int64_t[::1] labels,
                       floating[:, ::1] dlogits, bint smoothed, double smoothing,
                       int nthreads) except? -1.0:
    """The mean (smoothed) cross-entropy of every row, the rows split over the threads; labels
    are checked again here (cheaply, serially) so that no label can make the kernel read or
    write outside the row, whatever the caller checked."""
    cdef Py_ssize_t n = logits.shape[0], classes = logits.shape[1], i
    cdef double total = 0.0, scale
    cdef double* row_loss
    if labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},), got ({labels.shape[0]},)")
    if dlogits.shape[0] != n or dlogits.shape[1] != classes:
        raise ValueError(f"dlogits must have shape ({n}, {classes})")
    if n < 1 or classes < 1:
        raise ValueError(f"logits must have at least one row and one class, got ({n}, {classes})")
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
            if smoothed:
                row_loss[i] = _smoothed_row(&logits[i, 0], labels[i], classes, smoothing,
                                            &dlogits[i, 0], scale)
            else:
                row_loss[i] = _row(&logits[i, 0], labels[i], classes, &dlogits[i, 0], scale)
        for i in range(n):
            total += row_loss[i]
    free(row_loss)
    return total / n


def smoothed_cross_entropy(const floating[:, ::1] logits, const int64_t[::1] labels,
                           double smoothing, floating[:, ::1] dlogits, int nthreads=0):
    """Mean cross-entropy against label-smoothed targets; writes d(mean loss)/d(logits) into
    dlogits (which may be logits itself)."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    return _mean_loss(logits, labels, dlogits, True, smoothing, nthreads)


cdef extern from "argmax.h" nogil:
    Py_ssize_t fastnn_argmax_f32(const float* row, Py_ssize_t classes)
    Py_ssize_t fastnn_argmax_f64(const double* row, Py_ssize_t classes)


def count_correct(const floating[:, ::1] outputs, const int64_t[::1] labels):
    """How many rows have their label as argmax (NumPy's argmax: the first maximum, and the
    first NaN where a row has one; src/argmax.h)."""
    cdef Py_ssize_t n = outputs.shape[0], classes = outputs.shape[1], i, best
    cdef Py_ssize_t correct = 0
    if labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},), got ({labels.shape[0]},)")
    if classes < 1:
        return 0
    with nogil:
        for i in range(n):
            if floating is float:
                best = fastnn_argmax_f32(&outputs[i, 0], classes)
            else:
                best = fastnn_argmax_f64(&outputs[i, 0], classes)
            correct += best == labels[i]
    return correct
