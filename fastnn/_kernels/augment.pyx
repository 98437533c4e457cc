"""Gather a batch of images and warp each by its own affine map, in one pass (the training
loop's batch gather with augmentation).

For output pixel (row i, column j) of image b, the source point is
    sx = m[b,0] * j + m[b,1] * i + m[b,2],   sy = m[b,3] * j + m[b,4] * i + m[b,5]
(the inverse of the augmenting transform, computed by the caller), sampled bilinearly with
zeros outside the image. Coordinates are computed in double precision from the given
matrices and each output image is written by one thread, so the result is the same bits for
any thread count. The thread count is an argument.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastnn._kernels.runtime cimport threads_for
from libc.math cimport floor
from libc.stdint cimport int64_t

cdef Py_ssize_t PARALLEL_MIN_PIXELS = 8192


cdef inline double _pixel(const floating* plane, Py_ssize_t height, Py_ssize_t width,
                          Py_ssize_t y, Py_ssize_t x) noexcept nogil:
    if y < 0 or y >= height or x < 0 or x >= width:
        return 0.0
    return plane[y * width + x]


def gather_affine(const floating[:, :, ::1] src, const int64_t[::1] index,
                  const double[:, ::1] matrices, Py_ssize_t height, Py_ssize_t width,
                  floating[:, :, ::1] out, int nthreads):
    """out[b] = src[index[b]] warped by matrices[b]; src and out are (N, C, H*W)."""
    cdef Py_ssize_t batch = index.shape[0], rows = src.shape[0], channels = src.shape[1]
    cdef Py_ssize_t b, c, i, j, x0, y0
    cdef double sx, sy, fx, fy, v
    cdef const floating* plane
    if height < 1 or width < 1 or src.shape[2] != height * width:
        raise ValueError(f"src planes must hold height*width = {height * width} values")
    if out.shape[0] != batch or out.shape[1] != channels or out.shape[2] != height * width:
        raise ValueError(f"out must have shape ({batch}, {channels}, {height * width})")
    if matrices.shape[0] != batch or matrices.shape[1] != 6:
        raise ValueError(f"matrices must have shape ({batch}, 6)")
    for b in range(batch):
        if index[b] < 0 or index[b] >= rows:
            raise IndexError(f"index {index[b]} is outside [0, {rows})")
    cdef int nt = threads_for(
        batch * channels * height * width, PARALLEL_MIN_PIXELS, nthreads)
    with nogil:
        for b in prange(batch, schedule="static", num_threads=nt):
            for c in range(channels):
                plane = &src[index[b], c, 0]
                for i in range(height):
                    for j in range(width):
                        sx = matrices[b, 0] * j + matrices[b, 1] * i + matrices[b, 2]
                        sy = matrices[b, 3] * j + matrices[b, 4] * i + matrices[b, 5]
                        fx = floor(sx)
                        fy = floor(sy)
                        x0 = <Py_ssize_t>fx
                        y0 = <Py_ssize_t>fy
                        fx = sx - fx
                        fy = sy - fy
                        if x0 < -1 or x0 >= width or y0 < -1 or y0 >= height:
                            out[b, c, i * width + j] = 0
                            continue
                        v = ((1.0 - fy) * ((1.0 - fx) * _pixel(plane, height, width, y0, x0)
                                           + fx * _pixel(plane, height, width, y0, x0 + 1))
                             + fy * ((1.0 - fx) * _pixel(plane, height, width, y0 + 1, x0)
                                     + fx * _pixel(plane, height, width, y0 + 1, x0 + 1)))
                        out[b, c, i * width + j] = <floating>v
