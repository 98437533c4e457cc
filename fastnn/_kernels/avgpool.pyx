"""Average pooling (kernel k, stride s, no padding) and global average pooling, forward and
backward, one (n, c) plane per task.

Planes are independent, so every output and every input gradient is written by one thread,
and each sum is taken in the same (row-major window) order whatever the thread count.
Arrays arrive as (planes, H*W) views of the NCHW arrays. The thread count is an argument.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastnn._kernels.runtime cimport threads_for

cdef Py_ssize_t PARALLEL_MIN_SIZE = 16384


def _check_sizes(Py_ssize_t planes, Py_ssize_t x_planes, Py_ssize_t x_size, Py_ssize_t height,
                 Py_ssize_t width, Py_ssize_t kernel, Py_ssize_t stride, Py_ssize_t y_planes,
                 Py_ssize_t y_size, Py_ssize_t out_h, Py_ssize_t out_w):
    if kernel < 1 or stride < 1 or out_h < 1 or out_w < 1 or height < 1 or width < 1:
        raise ValueError("height, width, kernel, stride and the output size must be >= 1")
    if max(height, width, kernel, stride, out_h, out_w) >= 2**31 or height * width >= 2**31:
        raise ValueError("height, width, kernel, stride and the output size must be < 2**31")
    if x_planes != planes or x_size != height * width:
        raise ValueError(f"x must have shape ({planes}, {height * width})")
    if y_planes != planes or y_size != out_h * out_w:
        raise ValueError(f"y must have shape ({planes}, {out_h * out_w})")
    if (out_h - 1) * stride + kernel > height or (out_w - 1) * stride + kernel > width:
        raise ValueError("the pooling windows do not fit the input")


def avgpool_forward(const floating[:, ::1] x, Py_ssize_t height, Py_ssize_t width,
                    Py_ssize_t kernel, Py_ssize_t stride, floating[:, ::1] y,
                    Py_ssize_t out_h, Py_ssize_t out_w, int nthreads):
    """y[p, oh, ow] = mean of the kernel x kernel window at (oh*stride, ow*stride)."""
    cdef Py_ssize_t planes = x.shape[0], p, oh, ow, i, j, at
    cdef double total, inv = 1.0 / (kernel * kernel)
    _check_sizes(planes, x.shape[0], x.shape[1], height, width, kernel, stride, y.shape[0],
                 y.shape[1], out_h, out_w)
    cdef int nt = threads_for(planes * height * width, PARALLEL_MIN_SIZE, nthreads)
    with nogil:
        for p in prange(planes, schedule="static", num_threads=nt):
            for oh in range(out_h):
                for ow in range(out_w):
                    total = 0.0
                    for i in range(kernel):
                        at = (oh * stride + i) * width + ow * stride
                        for j in range(kernel):
                            total = total + x[p, at + j]
                    y[p, oh * out_w + ow] = <floating>(total * inv)


def avgpool_backward(const floating[:, ::1] dy, Py_ssize_t height, Py_ssize_t width,
                     Py_ssize_t kernel, Py_ssize_t stride, floating[:, ::1] dx,
                     Py_ssize_t out_h, Py_ssize_t out_w, int nthreads):
    """dx = the gradient of avgpool_forward: each dy / kernel**2 added over its window
    (windows in row-major order, so overlapping windows sum in a fixed order)."""
    cdef Py_ssize_t planes = dy.shape[0], p, oh, ow, i, j, at, k
    cdef floating g
    cdef double inv = 1.0 / (kernel * kernel)
    _check_sizes(planes, dx.shape[0], dx.shape[1], height, width, kernel, stride, dy.shape[0],
                 dy.shape[1], out_h, out_w)
    cdef int nt = threads_for(planes * height * width, PARALLEL_MIN_SIZE, nthreads)
    with nogil:
        for p in prange(planes, schedule="static", num_threads=nt):
            for k in range(height * width):
                dx[p, k] = 0
            for oh in range(out_h):
                for ow in range(out_w):
                    g = <floating>(dy[p, oh * out_w + ow] * inv)
                    for i in range(kernel):
                        at = (oh * stride + i) * width + ow * stride
                        for j in range(kernel):
                            dx[p, at + j] += g


def global_avgpool_forward(const floating[:, ::1] x, floating[::1] y, int nthreads):
    """y[p] = mean of plane p (summed in order, in double)."""
    cdef Py_ssize_t planes = x.shape[0], size = x.shape[1], p, k
    cdef double total
    if size < 1:
        raise ValueError("x planes must hold at least one value")
    if y.shape[0] != planes:
        raise ValueError(f"y must have shape ({planes},)")
    cdef int nt = threads_for(planes * size, PARALLEL_MIN_SIZE, nthreads)
    with nogil:
        for p in prange(planes, schedule="static", num_threads=nt):
            total = 0.0
            for k in range(size):
                total = total + x[p, k]
            y[p] = <floating>(total / size)


def global_avgpool_backward(const floating[::1] dy, floating[:, ::1] dx, int nthreads):
    """dx[p, :] = dy[p] / plane size."""
    cdef Py_ssize_t planes = dx.shape[0], size = dx.shape[1], p, k
    cdef floating g
    if size < 1:
        raise ValueError("dx planes must hold at least one value")
    if dy.shape[0] != planes:
        raise ValueError(f"dy must have shape ({planes},)")
    cdef int nt = threads_for(planes * size, PARALLEL_MIN_SIZE, nthreads)
    with nogil:
        for p in prange(planes, schedule="static", num_threads=nt):
            g = <floating>(<double>dy[p] / size)
            for k in range(size):
                dx[p, k] = g
