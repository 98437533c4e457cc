"""Layers beyond the first set: BatchNorm1d, BatchNorm2d, AvgPool2d, GlobalAvgPool2d,
LeakyReLU. Like the others they compute through their backend's kernels
(fastnn/backends/numpy_layers.py is the reference).

Batch normalization keeps running statistics (float64, whatever the model's dtype) next to its
trainable weight and bias; they are saved and loaded with the model (`buffer_names`) but never
touched by an optimizer. In evaluation a BatchNorm right after a Linear or Conv2d is folded
into that layer's weights (fastnn/folding.py), so `predict` runs one kernel for both.
"""
import math
import numbers

import numpy as np

from .layers import FLOAT_DTYPES, Layer, _int_arg, _Pool2d


def _real(name, value, minimum, maximum=None, inclusive=True):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value < minimum or (not inclusive and value == minimum) or \
            (maximum is not None and value > maximum):
        bound = f">= {minimum}" if inclusive else f"> {minimum}"
        if maximum is not None:
            bound += f" and <= {maximum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


class _BatchNorm(Layer):
    """Normalize each channel (axis 1) by the batch's mean and variance while training and by
    the running statistics in evaluation; then scale by `weight` and shift by `bias` (when
    affine). momentum: how far the running statistics move towards each batch's (PyTorch's
    convention: running = (1 - momentum) * running + momentum * batch)."""

    input_ndim = None  # per-sample dimensions: 1 for BatchNorm1d, 3 for BatchNorm2d
    buffer_names = ("running_mean", "running_var")

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True):
        super().__init__()
        self.num_features = _int_arg("num_features", num_features, 1)
        self.eps = _real("eps", eps, 0.0, inclusive=False)
        self.momentum = _real("momentum", momentum, 0.0, 1.0)
        if not isinstance(affine, (bool, np.bool_)):
            raise TypeError(f"affine must be a bool, got {type(affine).__name__}")
        self.affine = bool(affine)
        self.param_names = ("weight", "bias") if self.affine else ()
        self.buffers = []
        self.relu = False     # set by Sequential when a ReLU follows and is fused in
        self.folded = False   # set by Sequential: evaluation runs inside the previous layer
        self._constants = None  # (ones, zeros) standing in for weight and bias when not affine
        self._reuse_out = False

    def config(self):
        cfg = {"num_features": self.num_features}
        if self.eps != 1e-5:
            cfg["eps"] = self.eps
        if self.momentum != 0.1:
            cfg["momentum"] = self.momentum
        if not self.affine:
            cfg["affine"] = False
        return cfg

    def __repr__(self):
        extra = "".join(f", {k}={v!r}" for k, v in self.config().items() if k != "num_features")
        return f"{type(self).__name__}({self.num_features}{extra})"

    def param_shapes(self):
        c = (self.num_features,)
        shapes = {"weight": c, "bias": c} if self.affine else {}
        shapes.update(running_mean=c, running_var=c)
        return shapes

    def buffer_shapes(self):
        return {"running_mean": (self.num_features,), "running_var": (self.num_features,)}

    def initialize(self, init=None, dtype=np.float32, backend=None):
        """weight 1, bias 0, running mean 0, running variance 1."""
        super().initialize(backend=backend)
        b = self.backend
        c = self.num_features
        if self.affine:
            self.set_params([b.asarray(np.ones(c, dtype)), b.asarray(np.zeros(c, dtype))])
        self.buffers = [b.asarray(np.zeros(c)), b.asarray(np.ones(c))]
        self._constants = None
        self._bind()
        return self

    def set_buffers(self, arrays):
        self.buffers = list(arrays)

    def to(self, backend, dtype=None):
        old = self.backend
        super().to(backend, dtype)
        new = self.backend
        self.buffers = [new.asarray(np.asarray(old.to_numpy(a), dtype=np.float64))
                        for a in self.buffers]
        self._constants = None
        return self

    def _bind(self):
        self._reuse_out = self.reuse and "batchnorm_forward" in self.backend.fills_out

    def _scale_params(self, dtype):
        """(weight, bias), or ones and zeros when not affine."""
        if self.affine:
            return self.params[0], self.params[1]
        if self._constants is None or self._constants[0].dtype != dtype:
            b = self.backend
            self._constants = (b.asarray(np.ones(self.num_features, dtype)),
                               b.asarray(np.zeros(self.num_features, dtype)))
        return self._constants

    def fold_factors(self):
        """(scale, shift), float64 numpy (C,): evaluation computes x * scale + shift (then the
        ReLU when fused), which is what a preceding Linear or Conv2d folds into its weights."""
        b = self.backend
        gamma, beta = (np.asarray(b.to_numpy(a), np.float64) for a in self._scale_params(
            np.float64))
        mean, var = (np.asarray(b.to_numpy(a)) for a in self.buffers)
        scale = gamma / np.sqrt(var + self.eps)
        return scale, beta - mean * scale

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != self.input_ndim or input_shape[0] != self.num_features:
            want = "(C,)" if self.input_ndim == 1 else "(C, H, W)"
            raise ValueError(f"{self!r} expects input of shape {want} with C = "
                             f"{self.num_features} per sample, got {input_shape}")
        return input_shape

    def flops(self, input_shape):
        return 2 * math.prod(input_shape)

    def forward(self, x, training=False):
        if not self.buffers:
            self.initialize(dtype=x.dtype if x.dtype in FLOAT_DTYPES else np.float32)
        if not training and self.folded:
            return x  # the previous layer already applied it (evaluation only)
        weight, bias = self._scale_params(x.dtype)
        out = self._scratch("y", x.shape, x.dtype) if training and self._reuse_out else None
        kwargs = {"out": out} if out is not None else {}
        y, mean, inv_std = self.backend.batchnorm_forward(
            x, weight, bias, self.buffers[0], self.buffers[1], training=training,
            momentum=self.momentum, eps=self.eps, relu=self.relu, check_finite=False, **kwargs)
        if training:
            self._saved = (x, y, mean, inv_std)
        return y

    def backward(self, dy):
        x, y, mean, inv_std = self._saved
        self._saved = None
        weight, _ = self._scale_params(x.dtype)
        dx, dgamma, dbeta = self._backend.batchnorm_backward(
            x, y, dy, weight, mean, inv_std, relu=self.relu, need_dx=self.need_dx,
            check_finite=False)
        if self.affine:
            self.grads[0], self.grads[1] = dgamma, dbeta
        return dx


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) features (after a Linear)."""

    input_ndim = 1


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) maps per channel, over N, H and W (after a Conv2d)."""

    input_ndim = 3


class AvgPool2d(_Pool2d):
    """Mean over kernel_size x kernel_size windows (stride defaults to kernel_size), no padding."""

    def flops(self, input_shape):
        c, ho, wo = self.output_shape(input_shape)
        return c * ho * wo * self.kernel_size ** 2

    def forward(self, x, training=False):
        y = self.backend.avgpool2d_forward(x, self.kernel_size, self.stride, check_finite=False)
        if training:
            self._x_shape = x.shape
        return y

    def backward(self, dy):
        return self._backend.avgpool2d_backward(dy, self._x_shape, self.kernel_size,
                                                self.stride, check_finite=False)


class GlobalAvgPool2d(Layer):
    """(N, C, H, W) -> (N, C): the mean of each channel's map (no Flatten needed after it)."""

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"{self!r} expects (C, H, W) per sample, got {input_shape}")
        return (input_shape[0],)

    def flops(self, input_shape):
        return math.prod(input_shape)

    def forward(self, x, training=False):
        y = self.backend.global_avgpool2d_forward(x, check_finite=False)
        if training:
            self._x_shape = x.shape
        return y

    def backward(self, dy):
        return self._backend.global_avgpool2d_backward(dy, self._x_shape, check_finite=False)


class LeakyReLU(Layer):
    """x where x > 0, else negative_slope * x."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = _real("negative_slope", negative_slope, 0.0)

    def config(self):
        return {"negative_slope": self.negative_slope}

    def flops(self, input_shape):
        return math.prod(input_shape)

    def forward(self, x, training=False):
        y = self.backend.leaky_relu_forward(x, self.negative_slope, check_finite=False)
        if training:
            self._x = x
        return y

    def backward(self, dy):
        x, self._x = self._x, None
        return self._backend.leaky_relu_backward(x, dy, self.negative_slope, check_finite=False)


EXTRA_LAYER_TYPES = {cls.__name__: cls for cls in
                     (BatchNorm1d, BatchNorm2d, AvgPool2d, GlobalAvgPool2d, LeakyReLU)}
