"""Batch normalization over the channels of (N, C, S) arrays (S = H*W for BatchNorm2d, 1 for
BatchNorm1d): the batch statistics, the normalization (optionally with the ReLU after it) and
the training-mode backward pass.

Determinism: every per-channel sum is taken by one thread, in sample-then-position order, in
double precision, so the statistics and the parameter gradients are the same bits for any
thread count. The element-wise passes are split over (sample, channel) planes, each element
written by exactly one thread.

The thread count is an argument (`threads`), never read from a global here.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

# Below this many elements one thread is faster than waking the others.
cdef Py_ssize_t PARALLEL_MIN_SIZE = 16384


cdef inline int _threads_for(Py_ssize_t size, int threads) noexcept nogil:
    return threads if size >= PARALLEL_MIN_SIZE and threads > 1 else 1


def _check_layout(Py_ssize_t rows, Py_ssize_t size, Py_ssize_t n, Py_ssize_t c,
                  Py_ssize_t s, str name):
    if n < 1 or c < 1 or s < 1:
        raise ValueError(f"n, channels and positions must be >= 1, got {n}, {c}, {s}")
    if rows != n or size != c * s:
        raise ValueError(f"{name} must have shape ({n}, {c * s}), got ({rows}, {size})")


def batch_stats(const floating[:, ::1] x, Py_ssize_t channels, double[::1] mean,
                double[::1] var, int threads):
    """mean[c] and the biased variance var[c] of x viewed as (N, C, S), over N and S.

    Two passes (mean, then the squared deviations), so a large common offset does not
    cancel the variance away."""
    cdef Py_ssize_t n = x.shape[0], s, c, i, k
    cdef double total, dev, count
    if channels < 1 or x.shape[1] % channels:
        raise ValueError(f"x rows ({x.shape[1]} values) must split into {channels} channels")
    s = x.shape[1] // channels
    _check_layout(n, x.shape[1], n, channels, s, "x")
    if mean.shape[0] != channels or var.shape[0] != channels:
        raise ValueError(f"mean and var must have shape ({channels},)")
    count = <double>(n * s)
    cdef int nt = _threads_for(n * channels * s, threads)
    with nogil:
        for c in prange(channels, schedule="static", num_threads=nt):
            total = 0.0
            for i in range(n):
                for k in range(s):
                    total = total + x[i, c * s + k]
            mean[c] = total / count
            total = 0.0
            for i in range(n):
                for k in range(s):
                    dev = x[i, c * s + k] - mean[c]
                    total = total + dev * dev
            var[c] = total / count


def scale_shift(const floating[:, ::1] x, Py_ssize_t channels, const double[::1] scale,
                const double[::1] shift, bint relu, floating[:, ::1] y, int threads):
    """y = x * scale[c] + shift[c] over x viewed as (N, C, S), then max(., 0) when relu.
    y may be x itself (in place)."""
    cdef Py_ssize_t n = x.shape[0], s, plane, c, i, k, at
    cdef floating a, b, v
    if channels < 1 or x.shape[1] % channels:
        raise ValueError(f"x rows ({x.shape[1]} values) must split into {channels} channels")
    s = x.shape[1] // channels
    _check_layout(n, x.shape[1], n, channels, s, "x")
    _check_layout(y.shape[0], y.shape[1], n, channels, s, "y")
    if scale.shape[0] != channels or shift.shape[0] != channels:
        raise ValueError(f"scale and shift must have shape ({channels},)")
    cdef int nt = _threads_for(n * channels * s, threads)
    with nogil:
        for plane in prange(n * channels, schedule="static", num_threads=nt):
            i = plane // channels
            c = plane % channels
            a = <floating>scale[c]
            b = <floating>shift[c]
            at = c * s
            if relu:
                for k in range(s):
                    v = x[i, at + k] * a + b
                    y[i, at + k] = v if v > 0 else 0
            else:
                for k in range(s):
                    y[i, at + k] = x[i, at + k] * a + b


def backward(const floating[:, ::1] x, const floating[:, ::1] y, const floating[:, ::1] dy,
             Py_ssize_t channels, const double[::1] gamma, const double[::1] mean,
             const double[::1] inv_std, bint relu, floating[:, ::1] dx, double[::1] dgamma,
             double[::1] dbeta, int threads):
    """Training-mode gradients of y = relu?((x - mean) * inv_std * gamma + beta) with batch
    statistics: dgamma[c], dbeta[c] and, when dx has rows, dx. y is the forward output (its
    sign masks dy when relu). dx may be dy itself."""
    cdef Py_ssize_t n = x.shape[0], s, c, i, k, plane, at
    cdef double sum_dy, sum_dy_xhat, g, xhat, count
    cdef floating a, b, k1, m, d
    if channels < 1 or x.shape[1] % channels:
        raise ValueError(f"x rows ({x.shape[1]} values) must split into {channels} channels")
    s = x.shape[1] // channels
    _check_layout(n, x.shape[1], n, channels, s, "x")
    _check_layout(dy.shape[0], dy.shape[1], n, channels, s, "dy")
    if relu:
        _check_layout(y.shape[0], y.shape[1], n, channels, s, "y")
    if dx.shape[0]:
        _check_layout(dx.shape[0], dx.shape[1], n, channels, s, "dx")
    for name, a_len in (("gamma", gamma.shape[0]), ("mean", mean.shape[0]),
                        ("inv_std", inv_std.shape[0]), ("dgamma", dgamma.shape[0]),
                        ("dbeta", dbeta.shape[0])):
        if a_len != channels:
            raise ValueError(f"{name} must have shape ({channels},)")
    count = <double>(n * s)
    cdef int nt = _threads_for(n * channels * s, threads)
    with nogil:
        # per-channel sums: one thread per channel, fixed order (deterministic)
        for c in prange(channels, schedule="static", num_threads=nt):
            sum_dy = 0.0
            sum_dy_xhat = 0.0
            for i in range(n):
                for k in range(s):
                    g = dy[i, c * s + k]
                    if relu and not (y[i, c * s + k] > 0):
                        g = 0.0
                    xhat = (x[i, c * s + k] - mean[c]) * inv_std[c]
                    sum_dy = sum_dy + g
                    sum_dy_xhat = sum_dy_xhat + g * xhat
            dbeta[c] = sum_dy
            dgamma[c] = sum_dy_xhat
        if dx.shape[0]:
            # dx = gamma * inv_std * (dy - dbeta / M - xhat * dgamma / M)
            for plane in prange(n * channels, schedule="static", num_threads=nt):
                i = plane // channels
                c = plane % channels
                at = c * s
                a = <floating>(gamma[c] * inv_std[c])
                b = <floating>(dbeta[c] / count)
                k1 = <floating>(dgamma[c] / count * inv_std[c])
                m = <floating>mean[c]
                for k in range(s):
                    d = dy[i, at + k]
                    if relu and not (y[i, at + k] > 0):
                        d = 0
                    dx[i, at + k] = a * (d - b - (x[i, at + k] - m) * k1)
