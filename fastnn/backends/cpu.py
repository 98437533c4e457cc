"""The CPU backend: checked thin wrappers over the compiled kernels in fastnn._kernels.

Same contract and same argument checks as the NumPy reference (which it subclasses, so anything
not overridden here is the reference's). Every kernel also takes keyword-only output arrays
(`out=`, shaped like its return value) and workspaces, so a training step can run without
allocating; arrays written by a kernel must be C-contiguous, of the right shape and dtype, and
must not overlap the arrays it reads.
"""
import numpy as np

from . import _checks as check
from .numpy import NumpyBackend

try:
    from fastnn._kernels import loss as _loss
    from fastnn._kernels import optim as _optim
    from fastnn._kernels import pool as _pool
    from fastnn._kernels import runtime as _runtime
except ImportError as exc:  # a source checkout that was never built
    _IMPORT_ERROR = exc
else:
    _IMPORT_ERROR = None

_BITS = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}


def probe():
    """None when the compiled kernels import, else why this backend cannot run."""
    if _IMPORT_ERROR is not None:
        return (f"fastnn's compiled kernels are missing: reinstall with `pip install .` "
                f"({_IMPORT_ERROR})")
    return None


def _finite(name, a):
    """The reference's finiteness check, as one allocation-free compiled scan."""
    if not _runtime.all_finite_bits(a.reshape(-1).view(_BITS[a.dtype])):
        raise ValueError(f"{name} contains NaN or infinity")


def _output(name, out, shape, dtype, reads, *, zero=False):
    """`out` checked as a kernel output that overlaps none of `reads`, or a new array."""
    if out is None:
        return np.zeros(shape, dtype) if zero else np.empty(shape, dtype)
    out = check.writable_array(name, out, shape, dtype)
    for read_name, a in reads.items():
        if a is not None and np.may_share_memory(out, a):
            raise ValueError(f"{name} must not overlap {read_name}")
    return out


def _output_tuple(out, count):
    if out is None:
        return (None,) * count
    if not isinstance(out, (tuple, list)) or len(out) != count:
        raise TypeError(f"out must be a tuple of {count} arrays (or None), got {out!r}")
    return tuple(out)


def _distinct(**outputs):
    """Outputs written by one call must not overlap each other."""
    items = [(k, v) for k, v in outputs.items() if v is not None]
    for i, (name, a) in enumerate(items):
        for other, b in items[i + 1:]:
            if np.may_share_memory(a, b):
                raise ValueError(f"{name} must not overlap {other}")


class CpuBackend(NumpyBackend):
    name = "cpu"

    # ---- conv2d -------------------------------------------------------------------------------
    # CONV2D: owned by the conv kernels (fastnn/_kernels/conv.pyx). Until they land, these two
    # methods are the reference's (inherited) -- correct, but not compiled.

    # ---- max-pool -----------------------------------------------------------------------------

    def maxpool2d_forward(self, x, kernel=2, stride=None, *, check_finite=True, out=None):
        """(y, argmax) as the reference; out=(y, argmax) reuses arrays of shape (N, C, Ho, Wo)."""
        x = check.float_array("x", x, 4)
        kernel, stride, y_shape = check.pool_args(x.shape, kernel, stride)
        if check_finite:
            _finite("x", x)
        y_out, argmax_out = _output_tuple(out, 2)
        y = _output("y", y_out, y_shape, x.dtype, {"x": x})
        argmax = _output("argmax", argmax_out, y_shape, np.int32, {"x": x})
        _distinct(y=y, argmax=argmax)
        n, c, h, w = x.shape
        ho, wo = y_shape[2], y_shape[3]
        _pool.maxpool_forward(x.reshape(n * c, h * w), h, w, kernel, stride,
                              y.reshape(n * c, ho * wo), argmax.reshape(n * c, ho * wo), ho, wo)
        return y, argmax

    def maxpool2d_backward(self, dy, argmax, x_shape, kernel=2, stride=None, *,
                           check_finite=True, out=None):
        dy = check.float_array("dy", dy, 4)
        x_shape = check.shape_tuple("x_shape", x_shape)
        kernel, stride, y_shape = check.pool_args(x_shape, kernel, stride)
        check.expect_shape("dy", dy, y_shape)
        n, c, h, w = x_shape
        argmax = check.argmax_array(argmax, y_shape, h * w)
        if check_finite:
            _finite("dy", dy)
        dx = _output("dx", out, x_shape, dy.dtype, {"dy": dy, "argmax": argmax})
        planes = n * c
        bad = _pool.maxpool_backward(dy.reshape(planes, -1), argmax.reshape(planes, -1),
                                     dx.reshape(planes, h * w))
        if bad:  # unreachable after check.argmax_array; the kernel skipped them, never wrote
            raise ValueError(f"argmax indices must be in [0, {h * w}), found {bad} outside")
        return dx

    # ---- loss ---------------------------------------------------------------------------------

    def softmax_cross_entropy(self, logits, labels, *, check_finite=True, out=None):
        """(mean_loss, dlogits) as the reference. out= receives dlogits; it may be `logits`
        itself (the gradient then replaces the logits)."""
        logits = check.float_array("logits", logits, 2)
        n, classes = logits.shape
        if n < 1 or classes < 1:
            raise ValueError(f"logits must have at least one row and one class, got {logits.shape}")
        labels = check.labels("labels", labels, n, classes)
        if check_finite:
            _finite("logits", logits)
        if out is logits:
            dlogits = check.writable_array("out", out, logits.shape, logits.dtype)
        else:
            dlogits = _output("out", out, logits.shape, logits.dtype, {"logits": logits})
        loss = _loss.softmax_cross_entropy(logits, labels, dlogits)
        return logits.dtype.type(loss), dlogits

    # ---- optimizer updates (in place) ---------------------------------------------------------

    def sgd_step(self, param, grad, velocity=None, *, lr, momentum=0.0, weight_decay=0.0,
                 nesterov=False):
        param, grad, lr, momentum, weight_decay = self._sgd_args(
            param, grad, velocity, lr, momentum, weight_decay, nesterov)
        velocity = velocity if momentum else None
        # param, grad and state are updated elementwise: overlapping ones would be order-dependent
        _distinct(param=param, grad=grad, velocity=velocity)
        _optim.sgd_step(param.reshape(-1), grad.reshape(-1),
                        None if velocity is None else velocity.reshape(-1),
                        lr, momentum, weight_decay, bool(nesterov))

    def adam_step(self, param, grad, m, v, *, lr, step, beta1=0.9, beta2=0.999, eps=1e-8,
                  weight_decay=0.0):
        param, grad, lr, step, beta1, beta2, eps, weight_decay = self._adam_args(
            param, grad, m, v, lr, step, beta1, beta2, eps, weight_decay)
        _distinct(param=param, grad=grad, m=m, v=v)
        _optim.adam_step(param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
                         lr, beta1, beta2, 1 - beta1 ** step, 1 - beta2 ** step, eps,
                         weight_decay)
