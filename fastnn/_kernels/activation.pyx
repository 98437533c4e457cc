"""Leaky ReLU forward and backward over flat arrays, split in fixed chunks over the threads
(element-wise: every element is written by one thread, so any thread count gives the same
bits). The thread count is an argument."""
from cython cimport floating
from cython.parallel cimport prange

from fastnn._kernels.runtime cimport threads_for

cdef Py_ssize_t PARALLEL_MIN_SIZE = 65536
cdef Py_ssize_t CHUNK = 4096


def leaky_relu_forward(const floating[::1] x, double slope, floating[::1] y, int nthreads):
    """y = x where x > 0, else slope * x. y may be x itself."""
    cdef Py_ssize_t n = x.shape[0], i
    cdef floating a = <floating>slope, v
    if y.shape[0] != n:
        raise ValueError(f"y must have {n} elements, got {y.shape[0]}")
    cdef int nt = threads_for(n, PARALLEL_MIN_SIZE, nthreads)
    with nogil:
        for i in prange(n, schedule="static", chunksize=CHUNK, num_threads=nt):
            v = x[i]
            y[i] = v if v > 0 else v * a


def leaky_relu_backward(const floating[::1] x, const floating[::1] dy, double slope,
                        floating[::1] dx, int nthreads):
    """dx = dy where x > 0, else slope * dy. dx may be dy itself."""
    cdef Py_ssize_t n = x.shape[0], i
    cdef floating a = <floating>slope
    if dy.shape[0] != n or dx.shape[0] != n:
        raise ValueError(f"dy and dx must have {n} elements")
    cdef int nt = threads_for(n, PARALLEL_MIN_SIZE, nthreads)
    with nogil:
        for i in prange(n, schedule="static", chunksize=CHUNK, num_threads=nt):
            dx[i] = dy[i] if x[i] > 0 else dy[i] * a
