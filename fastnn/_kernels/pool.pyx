"""Max-pool forward (keeping the argmax) and backward, one (n, c) plane per task.

Planes are independent, so the backward scatter-add has no races even when windows overlap,
and each plane's sums happen in the same order as the reference's np.add.at.
Arrays arrive as (planes, H*W) views of the NCHW arrays.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t
from libc.string cimport memset

from fastnn._kernels.runtime cimport threads_for

cdef Py_ssize_t PARALLEL_MIN_SIZE = 16384


cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* (take ? a : b) on raw bits: compilers turn a ?: on floats back into a branch, which
       random data mispredicts half the time. */
    static inline float fastnn_pick_f(int64_t take, float a, float b) {
        uint32_t x, y, m = (uint32_t)-take;
        memcpy(&x, &a, 4); memcpy(&y, &b, 4); x = (x & m) | (y & ~m); memcpy(&a, &x, 4);
        return a;
    }
    static inline double fastnn_pick_d(int64_t take, double a, double b) {
        uint64_t x, y, m = (uint64_t)-take;
        memcpy(&x, &a, 8); memcpy(&y, &b, 8); x = (x & m) | (y & ~m); memcpy(&a, &x, 8);
        return a;
    }
    """
    float fastnn_pick_f(int64_t take, float a, float b) noexcept nogil
    double fastnn_pick_d(int64_t take, double a, double b) noexcept nogil


cdef inline void _forward_plane(const floating* x, Py_ssize_t width, Py_ssize_t kernel,
                                Py_ssize_t stride, Py_ssize_t out_h, Py_ssize_t out_w,
                                floating* y, int32_t* argmax) noexcept nogil:
    """Inlined with constant kernel and stride for the usual cases, so the window unrolls."""
    cdef Py_ssize_t oh, ow, i, j, best_at, at
    cdef int64_t take
    cdef floating best, v
    for oh in range(out_h):
        for ow in range(out_w):
            best_at = oh * stride * width + ow * stride
            best = x[best_at]
            # First maximum in row-major window order wins; the first NaN beats any number.
            for i in range(kernel):
                at = (oh * stride + i) * width + ow * stride
                for j in range(kernel):
                    v = x[at + j]
                    take = (v > best) | ((v != v) & (best == best))
                    best_at = ((at + j) & -take) | (best_at & ~(-take))
                    if floating is float:
                        best = fastnn_pick_f(take, v, best)
                    else:
                        best = fastnn_pick_d(take, v, best)
            y[oh * out_w + ow] = best
            argmax[oh * out_w + ow] = <int32_t>best_at


def maxpool_forward(const floating[:, ::1] x, Py_ssize_t height, Py_ssize_t width,
                    Py_ssize_t kernel, Py_ssize_t stride, floating[:, ::1] y,
                    int32_t[:, ::1] argmax, Py_ssize_t out_h, Py_ssize_t out_w, int nthreads=0):
    cdef Py_ssize_t planes = x.shape[0], p
    cdef int threads
    if kernel < 1 or stride < 1 or out_h < 1 or out_w < 1:
        raise ValueError("kernel, stride and the output size must be >= 1")
    # below 2**31 each, the products checked next cannot overflow
    if height < 1 or width < 1 or max(height, width, kernel, stride, out_h, out_w) >= 2**31:
        raise ValueError("height, width, kernel, stride and the output size must be in "
                         "[1, 2**31)")
    if x.shape[1] != height * width or height * width >= 2**31:
        raise ValueError(f"x planes must hold height*width = {height * width} values (< 2**31)")
    if (out_h - 1) * stride + kernel > height or (out_w - 1) * stride + kernel > width:
        raise ValueError("the pooling windows do not fit the input")
    if (y.shape[0] != planes or y.shape[1] != out_h * out_w
            or argmax.shape[0] != planes or argmax.shape[1] != out_h * out_w):
        raise ValueError(f"y and argmax must have shape ({planes}, {out_h * out_w})")
    threads = threads_for(planes * height * width, PARALLEL_MIN_SIZE, nthreads)
    with nogil:
        for p in prange(planes, schedule="static", num_threads=threads):
            if kernel == 2 and stride == 2:
                _forward_plane(&x[p, 0], width, 2, 2, out_h, out_w, &y[p, 0], &argmax[p, 0])
            elif kernel == 3 and stride == 2:
                _forward_plane(&x[p, 0], width, 3, 2, out_h, out_w, &y[p, 0], &argmax[p, 0])
            else:
                _forward_plane(&x[p, 0], width, kernel, stride, out_h, out_w, &y[p, 0],
                               &argmax[p, 0])


def maxpool_backward(const floating[:, ::1] dy, const int32_t[:, ::1] argmax,
                     floating[:, ::1] dx, int nthreads=0):
    """dx[p, argmax[p, j]] += dy[p, j]; returns how many argmax entries were out of range
    (skipped, never written). On `nthreads` threads (0: fastnn's count)."""
    cdef Py_ssize_t planes = dy.shape[0], size = dy.shape[1], plane = dx.shape[1], p, j
    cdef int32_t at
    cdef Py_ssize_t bad = 0
    cdef int threads
    if argmax.shape[0] != planes or argmax.shape[1] != size or dx.shape[0] != planes:
        raise ValueError(f"dy, argmax and dx must all have {planes} planes, dy and argmax "
                         f"{size} values per plane")
    threads = threads_for(planes * plane, PARALLEL_MIN_SIZE, nthreads)
    with nogil:
        for p in prange(planes, schedule="static", num_threads=threads):
            memset(&dx[p, 0], 0, plane * sizeof(floating))
            for j in range(size):
                at = argmax[p, j]
                if at < 0 or at >= plane:
                    bad += 1
                else:
                    dx[p, at] += dy[p, j]
    return bad
