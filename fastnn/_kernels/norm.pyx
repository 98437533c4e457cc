"""Batch normalization over the channels of (N, C, S) arrays (S = H*W for BatchNorm2d, 1 for
BatchNorm1d): the batch statistics, the normalization (optionally with the ReLU after it) and
the training-mode backward pass.

Determinism: every per-channel sum is taken by one thread, in sample-then-position order, in
double precision, so the statistics and the parameter gradients are the same bits for any
thread count. The element-wise passes are split over (sample, channel) planes, each element
written by exactly one thread.

The thread count is an argument (`nthreads`; 0: fastnn's count, resolved by
runtime.resolve_threads), never read from a global here.
"""
from cython cimport floating
from cython.parallel cimport prange

from fastnn._kernels.runtime cimport threads_for

# Below this many elements one thread is faster than waking the others.
cdef Py_ssize_t PARALLEL_MIN_SIZE = 16384


cdef inline void _plane_sums(const floating* p, Py_ssize_t s, double shift, double* total,
                             double* squares) noexcept nogil:
    """Add sum(p - shift) and sum((p - shift)**2) over s values to total and squares: four
    independent accumulators (a fixed order, so the same bits every time) hide the latency
    of the additions."""
    cdef double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0
    cdef double b0 = 0.0, b1 = 0.0, b2 = 0.0, b3 = 0.0, d0, d1, d2, d3
    cdef Py_ssize_t k = 0
    while k + 4 <= s:
        d0 = p[k] - shift
        d1 = p[k + 1] - shift
        d2 = p[k + 2] - shift
        d3 = p[k + 3] - shift
        a0 += d0
        a1 += d1
        a2 += d2
        a3 += d3
        b0 += d0 * d0
        b1 += d1 * d1
        b2 += d2 * d2
        b3 += d3 * d3
        k += 4
    while k < s:
        d0 = p[k] - shift
        a0 += d0
        b0 += d0 * d0
        k += 1
    total[0] += (a0 + a1) + (a2 + a3)
    squares[0] += (b0 + b1) + (b2 + b3)


cdef inline void _grad_sums(const floating* x, const floating* y, const floating* dy,
                            Py_ssize_t s, double mean, bint relu, double* sum_g,
                            double* sum_gx) noexcept nogil:
    """Add sum(g) and sum(g * (x - mean)) over s values, g = dy (masked by y > 0 when relu);
    four accumulators in a fixed order, as _plane_sums."""
    cdef double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0
    cdef double b0 = 0.0, b1 = 0.0, b2 = 0.0, b3 = 0.0, g0, g1, g2, g3
    cdef Py_ssize_t k = 0
    while k + 4 <= s:
        g0 = dy[k]
        g1 = dy[k + 1]
        g2 = dy[k + 2]
        g3 = dy[k + 3]
        if relu:
            g0 = g0 if y[k] > 0 else 0.0
            g1 = g1 if y[k + 1] > 0 else 0.0
            g2 = g2 if y[k + 2] > 0 else 0.0
            g3 = g3 if y[k + 3] > 0 else 0.0
        a0 += g0
        a1 += g1
        a2 += g2
        a3 += g3
        b0 += g0 * (x[k] - mean)
        b1 += g1 * (x[k + 1] - mean)
        b2 += g2 * (x[k + 2] - mean)
        b3 += g3 * (x[k + 3] - mean)
        k += 4
    while k < s:
        g0 = dy[k]
        if relu and not (y[k] > 0):
            g0 = 0.0
        a0 += g0
        b0 += g0 * (x[k] - mean)
        k += 1
    sum_g[0] += (a0 + a1) + (a2 + a3)
    sum_gx[0] += (b0 + b1) + (b2 + b3)


def _check_layout(Py_ssize_t rows, Py_ssize_t size, Py_ssize_t n, Py_ssize_t c,
                  Py_ssize_t s, str name):
    if n < 1 or c < 1 or s < 1:
        raise ValueError(f"n, channels and positions must be >= 1, got {n}, {c}, {s}")
    if rows != n or size != c * s:
        raise ValueError(f"{name} must have shape ({n}, {c * s}), got ({rows}, {size})")


def batch_stats(const floating[:, ::1] x, Py_ssize_t channels, double[::1] mean,
                double[::1] var, int nthreads):
    """mean[c] and the biased variance var[c] of x viewed as (N, C, S), over N and S.

    One pass of sums of (x - shift) and its square, shifted by the channel's first value so
    a large common offset does not cancel the variance away."""
    cdef Py_ssize_t n = x.shape[0], s, c, i
    cdef double total, squares, shift, count, m
    if channels < 1 or x.shape[1] % channels:
        raise ValueError(f"x rows ({x.shape[1]} values) must split into {channels} channels")
    s = x.shape[1] // channels
    _check_layout(n, x.shape[1], n, channels, s, "x")
    if mean.shape[0] != channels or var.shape[0] != channels:
        raise ValueError(f"mean and var must have shape ({channels},)")
    count = <double>(n * s)
    cdef int nt = threads_for(n * channels * s, PARALLEL_MIN_SIZE, nthreads)
    with nogil:
        for c in prange(channels, schedule="static", num_threads=nt):
            shift = x[0, c * s]
            total = 0.0
            squares = 0.0
            for i in range(n):
                _plane_sums(&x[i, c * s], s, shift, &total, &squares)
            m = total / count
            mean[c] = shift + m
            var[c] = max(squares / count - m * m, 0.0)


def scale_shift(const floating[:, ::1] x, Py_ssize_t channels, const double[::1] scale,
                const double[::1] shift, bint relu, floating[:, ::1] y, int nthreads):
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
    cdef int nt = threads_for(n * channels * s, PARALLEL_MIN_SIZE, nthreads)
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
             double[::1] dbeta, int nthreads):
    """Training-mode gradients of y = relu?((x - mean) * inv_std * gamma + beta) with batch
    statistics: dgamma[c], dbeta[c] and, when dx has rows, dx. y is the forward output (its
    sign masks dy when relu). dx may be dy itself."""
    cdef Py_ssize_t n = x.shape[0], s, c, i, k, plane, at
    cdef double sum_dy, sum_dy_xhat, count
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
    cdef int nt = threads_for(n * channels * s, PARALLEL_MIN_SIZE, nthreads)
    with nogil:
        # per-channel sums: one thread per channel, fixed order (deterministic)
        for c in prange(channels, schedule="static", num_threads=nt):
            sum_dy = 0.0
            sum_dy_xhat = 0.0
            for i in range(n):
                _grad_sums(&x[i, c * s], &y[i, c * s], &dy[i, c * s], s, mean[c], relu,
                           &sum_dy, &sum_dy_xhat)
            dbeta[c] = sum_dy
            dgamma[c] = sum_dy_xhat * inv_std[c]
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
                if relu:
                    for k in range(s):
                        d = dy[i, at + k] if y[i, at + k] > 0 else 0
                        dx[i, at + k] = a * (d - b - (x[i, at + k] - m) * k1)
                else:
                    for k in range(s):
                        dx[i, at + k] = a * (dy[i, at + k] - b - (x[i, at + k] - m) * k1)
