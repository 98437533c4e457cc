"""Compiled versions of the kernels in numpy_layers.py (batch normalization, average pooling,
leaky ReLU, label-smoothed cross-entropy, the affine batch gather): the same checks and
meaning, with the thread count passed to each kernel explicitly. Mixed into CpuBackend,
which also takes its output and finiteness checks (_output, _finite) from here.
Every kernel writes into out= arrays itself; check=False changes nothing here (the checks
are small beside these passes over the data).
"""

import numpy as np

from .. import validation as checks
from ..validation import affine_matrices, bn_args, bn_hyper, running_stats, saved_stats

try:
    from fastnn._kernels import activation as _activation
    from fastnn._kernels import augment as _augment
    from fastnn._kernels import avgpool as _avgpool
    from fastnn._kernels import loss as _loss
    from fastnn._kernels import norm as _norm
    from fastnn._kernels import runtime as _runtime
except ImportError:  # unbuilt checkout: cpu.probe() reports it; the reference stays usable
    _runtime = None


def _threads():
    """The thread count a kernel called now runs (fastnn's default drops to one thread while
    the machine is busy, as in every other kernel)."""
    return _runtime.threads_now()


_BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


def _finite(name, a):
    """The reference's finiteness check, as one allocation-free compiled scan."""
    if not _runtime.all_finite_bits(a.reshape(-1).view(_BITS[a.dtype])):
        raise ValueError(f"{name} contains NaN or infinity")


def _output(name, out, shape, dtype, reads, *, zero=False):
    """`out` checked as a kernel output that overlaps none of `reads`, or a new array."""
    if out is None:
        return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    out = checks.writable_array(name, out, shape, dtype)
    for read_name, a in reads.items():
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"{name} must not overlap {read_name}")
    return out


def _rows(a):
    """a as the kernels' 2-D (N, rest) view."""
    return a.reshape(a.shape[0], -1)


class CpuLayerKernels:
    """See the module docstring; arguments and results as in NumpyLayerKernels."""

    def batchnorm_forward(
        self,
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        *,
        training,
        momentum=0.1,
        eps=1e-5,
        relu=False,
        check_finite=True,
        out=None,
        check=True,
    ):
        x, gamma, beta = bn_args(x, gamma, beta)
        momentum, eps = bn_hyper(momentum, eps)
        channels = x.shape[1]
        running_mean, running_var = running_stats(running_mean, running_var, channels)
        if check_finite:
            _finite("x", x)
        y = _output("out", out, x.shape, x.dtype, {"x": x})
        if training:
            count = x.size // channels
            if count < 2:
                raise ValueError(
                    f"training-mode batch normalization needs more than one value "
                    f"per channel, got x of shape {tuple(x.shape)}"
                )
            mean = np.empty(channels)
            var = np.empty(channels)
            _norm.batch_stats(_rows(x), channels, mean, var, _threads())
            self._update_running_stats(running_mean, running_var, mean, var, momentum, count)
        else:
            mean = running_mean.copy()
            var = running_var
        inv_std = 1.0 / np.sqrt(var + eps)
        scale = gamma.astype(np.float64) * inv_std
        shift = beta.astype(np.float64) - mean * scale
        _norm.scale_shift(_rows(x), channels, scale, shift, bool(relu), _rows(y), _threads())
        return y, mean, inv_std

    def batchnorm_backward(
        self,
        x,
        y,
        dy,
        gamma,
        mean,
        inv_std,
        *,
        relu=False,
        need_dx=True,
        check_finite=True,
        out=None,
        check=True,
    ):
        """out=(dx or None, dgamma, dbeta) reuses arrays; dx may be dy itself."""
        x, gamma, _ = bn_args(x, gamma, gamma)
        dy = checks.float_array("dy", dy, x.ndim)
        checks.expect_shape("dy", dy, x.shape)
        checks.same_dtype(x=x, dy=dy)
        if relu:
            y = checks.float_array("y", y, x.ndim)
            checks.expect_shape("y", y, x.shape)
            checks.same_dtype(x=x, y=y)
        else:
            y = x  # unread
        channels = x.shape[1]
        mean, inv_std = saved_stats(mean, inv_std, channels)
        if check_finite:
            _finite("dy", dy)
        dx_out, dgamma_out, dbeta_out = (None, None, None) if out is None else out
        dx = None
        if need_dx:
            if dx_out is dy:
                dx = checks.writable_array("dx", dx_out, x.shape, x.dtype)
            else:
                dx = _output("dx", dx_out, x.shape, x.dtype, {"x": x, "dy": dy, "y": y})
        dgamma = _output("dgamma", dgamma_out, (channels,), x.dtype, {})
        dbeta = _output("dbeta", dbeta_out, (channels,), x.dtype, {})
        dgamma64 = np.empty(channels)
        dbeta64 = np.empty(channels)
        no_dx = np.empty((0, x.size // x.shape[0]), x.dtype)
        _norm.backward(
            _rows(x),
            _rows(y),
            _rows(dy),
            channels,
            gamma.astype(np.float64),
            mean,
            inv_std,
            bool(relu),
            _rows(dx) if dx is not None else no_dx,
            dgamma64,
            dbeta64,
            _threads(),
        )
        dgamma[...] = dgamma64
        dbeta[...] = dbeta64
        return dx, dgamma, dbeta

    def avgpool2d_forward(
        self, x, kernel=2, stride=None, *, check_finite=True, out=None, check=True
    ):
        x = checks.float_array("x", x, 4)
        kernel, stride, y_shape = checks.pool_args(x.shape, kernel, stride)
        if check_finite:
            _finite("x", x)
        y = _output("out", out, y_shape, x.dtype, {"x": x})
        n, c, h, w = x.shape
        ho, wo = y_shape[2], y_shape[3]
        _avgpool.avgpool_forward(
            x.reshape(n * c, h * w),
            h,
            w,
            kernel,
            stride,
            y.reshape(n * c, ho * wo),
            ho,
            wo,
            _threads(),
        )
        return y

    def avgpool2d_backward(
        self, dy, x_shape, kernel=2, stride=None, *, check_finite=True, out=None, check=True
    ):
        dy = checks.float_array("dy", dy, 4)
        x_shape = checks.shape_tuple("x_shape", x_shape)
        kernel, stride, y_shape = checks.pool_args(x_shape, kernel, stride)
        checks.expect_shape("dy", dy, y_shape)
        if check_finite:
            _finite("dy", dy)
        dx = _output("out", out, x_shape, dy.dtype, {"dy": dy})
        n, c, h, w = x_shape
        _avgpool.avgpool_backward(
            dy.reshape(n * c, -1),
            h,
            w,
            kernel,
            stride,
            dx.reshape(n * c, h * w),
            y_shape[2],
            y_shape[3],
            _threads(),
        )
        return dx

    def global_avgpool2d_forward(self, x, *, check_finite=True, out=None, check=True):
        x = checks.float_array("x", x, 4)
        if min(x.shape) < 1:
            raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
        if check_finite:
            _finite("x", x)
        n, c, h, w = x.shape
        y = _output("out", out, (n, c), x.dtype, {"x": x})
        _avgpool.global_avgpool_forward(x.reshape(n * c, h * w), y.reshape(-1), _threads())
        return y

    def global_avgpool2d_backward(self, dy, x_shape, *, check_finite=True, out=None, check=True):
        dy = checks.float_array("dy", dy, 2)
        x_shape = checks.shape_tuple("x_shape", x_shape)
        checks.expect_shape("dy", dy, x_shape[:2])
        if check_finite:
            _finite("dy", dy)
        dx = _output("out", out, x_shape, dy.dtype, {"dy": dy})
        n, c, h, w = x_shape
        _avgpool.global_avgpool_backward(dy.reshape(-1), dx.reshape(n * c, h * w), _threads())
        return dx

    def leaky_relu_forward(self, x, slope=0.01, *, check_finite=True, out=None, check=True):
        slope = checks.slope(slope)
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy ndarray, got {type(x).__name__}")
        x = checks.float_array("x", x, x.ndim)
        if check_finite:
            _finite("x", x)
        y = _output("out", out, x.shape, x.dtype, {"x": x})
        _activation.leaky_relu_forward(x.reshape(-1), slope, y.reshape(-1), _threads())
        return y

    def leaky_relu_backward(self, x, dy, slope=0.01, *, check_finite=True, out=None, check=True):
        slope = checks.slope(slope)
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x must be a numpy ndarray, got {type(x).__name__}")
        x = checks.float_array("x", x, x.ndim)
        dy = checks.float_array("dy", dy, x.ndim)
        checks.expect_shape("dy", dy, x.shape)
        checks.same_dtype(x=x, dy=dy)
        if check_finite:
            _finite("dy", dy)
        if out is dy:  # in place: each element is read before it is written
            dx = checks.writable_array("out", out, x.shape, x.dtype)
        else:
            dx = _output("out", out, x.shape, x.dtype, {"x": x, "dy": dy})
        _activation.leaky_relu_backward(
            x.reshape(-1), dy.reshape(-1), slope, dx.reshape(-1), _threads()
        )
        return dx

    def smoothed_cross_entropy(
        self, logits, labels, smoothing=0.1, *, check_finite=True, out=None, check=True
    ):
        """out= receives dlogits; it may be logits itself."""
        logits, labels, smoothing = checks.smoothed_cross_entropy_args(logits, labels, smoothing)
        if check_finite:
            _finite("logits", logits)
        if out is logits:
            dlogits = checks.writable_array("out", out, logits.shape, logits.dtype)
        else:
            dlogits = _output("out", out, logits.shape, logits.dtype, {"logits": logits})
        loss = _loss.smoothed_cross_entropy(logits, labels, smoothing, dlogits, _threads())
        return logits.dtype.type(loss), dlogits

    def gather_affine(self, x, index, matrices, out=None):
        x = checks.float_array("x", x, 4)
        index = np.asarray(index)
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise TypeError("index must be a 1-D integer array")
        index = checks.contiguous(index, np.int64)
        batch = index.shape[0]
        m = affine_matrices(matrices, batch)
        n, c, h, w = x.shape
        if out is None:
            out = np.empty((batch, c, h, w), x.dtype)
        elif not (
            isinstance(out, np.ndarray)
            and out.dtype == x.dtype
            and out.ndim == 4
            and out.shape[0] >= batch
            and out.shape[1:] == x.shape[1:]
            and out.flags.c_contiguous
            and out.flags.writeable
        ):
            raise ValueError(
                f"out must be a writeable C-contiguous {x.dtype} array of shape "
                f"(>= {batch}, {c}, {h}, {w})"
            )
        dst = out[:batch]
        if np.may_share_memory(dst, x):
            raise ValueError("out must not overlap x")
        _augment.gather_affine(
            x.reshape(n, c, h * w), index, m, h, w, dst.reshape(batch, c, h * w), _threads()
        )
        return dst
