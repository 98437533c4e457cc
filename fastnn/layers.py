"""Layers: Linear, Conv2d, MaxPool2d, Flatten, ReLU, Sigmoid, Tanh, Dropout.

A layer computes through its backend's kernels (from the registry, never a backend module), so
the same layer runs on numpy, cpu or cuda arrays. Shapes given to `output_shape` and `flops`
are per sample, without the batch axis.

Parameters are created by `initialize()`, which Sequential calls with the initializer suited to
the activation that follows (He before ReLU, Glorot otherwise); a layer used on its own
initializes itself on first use. Gradients land in `layer.grads`, parallel to `layer.params`;
each backward pass overwrites them.

Internal activations skip the kernels' finite checks (`check_finite=False`): the trainer checks
the input once and the loss at every logged step, which catches any NaN that appears inside.
"""
import math
import numbers

import numpy as np

from . import _random, backends

# Layers and models start on the compiled backend, or on the reference where it is not built
# (a model is plain arrays until it runs; Trainer(backend="cpu") then says why cpu is missing).
DEFAULT_BACKEND = "cpu"
FALLBACK_BACKEND = "numpy"
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INITIALIZERS = ("auto", "he", "glorot")


def _int_arg(name, value, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _pair_arg(name, value, minimum):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        return (_int_arg(name, value[0], minimum), _int_arg(name, value[1], minimum))
    value = _int_arg(name, value, minimum)
    return (value, value)


def _out_size(size, kernel, stride, padding, layer, axis):
    if size + 2 * padding < kernel:
        raise ValueError(f"{layer!r}: kernel {kernel} does not fit input {axis} {size} "
                         f"with padding {padding}")
    return (size + 2 * padding - kernel) // stride + 1


def default_backend():
    try:
        return backends.get(DEFAULT_BACKEND)
    except backends.BackendUnavailable:
        return backends.get(FALLBACK_BACKEND)


class Layer:
    """Base class. Subclasses set `param_names` and implement forward/backward/output_shape."""

    param_names = ()

    def __init__(self):
        self.params = []
        self.grads = []
        self.need_dx = True
        self._backend = None
        self.reuse = False     # training outputs and gradients go to arrays kept between steps
        self._buffers = {}
        self._shape_memo = (None, None)

    def set_reuse(self, flag):
        """Reuse output/gradient arrays between training steps (the Trainer turns this on for a
        fit: a step's arrays are dead once the optimizer has run). Off frees them."""
        self.reuse = bool(flag)
        self._buffers = {}
        self._bind()

    def _batch_output_shape(self, x_shape):
        """(N, *output_shape) for a batch of x_shape, remembered for the last x_shape seen."""
        memo = self._shape_memo  # one read: another thread may replace the pair
        if memo[0] != x_shape:
            memo = self._shape_memo = (x_shape, (x_shape[0], *self.output_shape(x_shape[1:])))
        return memo[1]

    def _scratch(self, key, shape, dtype):
        """A kept array of `shape`: the head rows of a larger one for a smaller last batch."""
        buf = self._buffers.get(key)
        if buf is None or buf.shape[0] < shape[0] or buf.shape[1:] != shape[1:] or \
                buf.dtype != dtype:
            buf = self._buffers[key] = self.backend.xp.empty(shape, dtype)
        return buf if buf.shape[0] == shape[0] else buf[:shape[0]]

    # ---- configuration ------------------------------------------------------------------------

    def config(self):
        """Constructor arguments, JSON-friendly (the architecture saved with a model)."""
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # ---- parameters and backend ---------------------------------------------------------------

    @property
    def backend(self):
        if self._backend is None:
            self._backend = default_backend()
        return self._backend

    def param_shapes(self):
        """{name: shape} of this layer's parameters, computed from the configuration alone."""
        return {}

    def initialize(self, init="auto", dtype=np.float32, backend=None):
        """(Re)create the parameters: biases zero, weights from fastnn's random stream."""
        if backend is not None:
            self._backend = backends.get(backend)
        self.params = []
        self.grads = [None] * len(self.param_names)
        return self

    def set_params(self, arrays):
        """Take these backend arrays as the parameters (shapes and dtypes already checked)."""
        self.params = list(arrays)
        self.grads = [None] * len(self.params)

    def to(self, backend, dtype=None):
        """Move the parameters to `backend` (and `dtype`); gradients are dropped."""
        new = backends.get(backend)
        old = self.backend
        if self.params:
            moved = []
            for p in self.params:
                host = old.to_numpy(p)
                moved.append(new.asarray(host if dtype is None else host.astype(dtype)))
            self.params = moved
        self.grads = [None] * len(self.params)
        self._backend = new
        self._buffers = {}
        self._bind()
        return self

    def _bind(self):
        """Called when the backend or the reuse setting changes: cache what the hot path needs
        (which optional kernel keywords this backend takes)."""

    # ---- computation --------------------------------------------------------------------------

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def flops(self, input_shape):
        """Floating-point operations of the forward pass for one sample (a multiply-add is 2)."""
        return 0

    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def __call__(self, x, training=False):
        return self.forward(x, training)


class _Parametric(Layer):
    """Linear and Conv2d: a weight and a bias, optionally fused with the ReLU that follows."""

    param_names = ("weight", "bias")

    def __init__(self, init):
        super().__init__()
        if init not in INITIALIZERS:
            raise ValueError(f"init must be one of {INITIALIZERS}, got {init!r}")
        self.init = init
        self.relu = False  # set by Sequential when a ReLU follows and is fused in
        self._bwd_kwargs = {"check_finite": False}
        self._reuse_fwd = self._reuse_bwd = False

    @property
    def weight(self):
        if not self.params:
            self.initialize()
        return self.params[0]

    @property
    def bias(self):
        if not self.params:
            self.initialize()
        return self.params[1]

    def fans(self):
        raise NotImplementedError

    def initialize(self, init=None, dtype=np.float32, backend=None):
        """He uniform (for ReLU) or Glorot uniform weights, zero bias. `init` None or "auto"
        uses the layer's own setting, and "auto" there means He when fused with a ReLU."""
        super().initialize(backend=backend)
        if init in (None, "auto"):
            init = self.init
        if init == "auto":
            init = "he" if self.relu else "glorot"
        if init not in INITIALIZERS:
            raise ValueError(f"init must be one of {INITIALIZERS}, got {init!r}")
        fan_in, fan_out = self.fans()
        limit = math.sqrt(6.0 / fan_in) if init == "he" else math.sqrt(6.0 / (fan_in + fan_out))
        shapes = self.param_shapes()
        # drawn in float64 so float32 and float64 models from one seed hold the same weights
        weight = _random.generator().uniform(-limit, limit, shapes["weight"]).astype(dtype)
        bias = np.zeros(shapes["bias"], dtype=dtype)
        self.set_params([self.backend.asarray(weight), self.backend.asarray(bias)])
        self._bind()
        return self

    def _bind(self):
        self._bwd_kwargs = {"check_finite": False, "need_dx": self.need_dx}
        # training passes write into kept buffers where the backend's kernels fill out= arrays
        fills = self.backend.fills_out
        self._reuse_fwd = self.reuse and self.FORWARD in fills
        self._reuse_bwd = self.reuse and self.BACKWARD in fills

    def param_count(self):
        return sum(math.prod(s) for s in self.param_shapes().values())


class Linear(_Parametric):
    """y = x @ weight.T + bias; weight (out_features, in_features), as in PyTorch."""

    FORWARD, BACKWARD = "linear_forward", "linear_backward"

    def __init__(self, in_features, out_features, *, init="auto"):
        super().__init__(init)
        self.in_features = _int_arg("in_features", in_features, 1)
        self.out_features = _int_arg("out_features", out_features, 1)

    def config(self):
        cfg = {"in_features": self.in_features, "out_features": self.out_features}
        if self.init != "auto":
            cfg["init"] = self.init
        return cfg

    def __repr__(self):
        extra = f", init={self.init!r}" if self.init != "auto" else ""
        return f"Linear({self.in_features}, {self.out_features}{extra})"

    def param_shapes(self):
        return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}

    def fans(self):
        return self.in_features, self.out_features

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.in_features,):
            hint = " (add nn.Flatten() before it)" if len(input_shape) > 1 else ""
            raise ValueError(f"{self!r} expects {self.in_features} features per sample, "
                             f"got input shape {tuple(input_shape)}{hint}")
        return (self.out_features,)

    def flops(self, input_shape):
        return 2 * self.in_features * self.out_features + self.out_features

    def forward(self, x, training=False):
        if not self.params:
            self.initialize()
        if training and self._reuse_fwd:  # the layer's own buffer: the backend may trust it
            y = self._backend.linear_forward(
                x, self.params[0], self.params[1], self.relu, check_finite=False,
                out=self._scratch("y", (x.shape[0], self.out_features), x.dtype), check=False)
        else:
            y = self._backend.linear_forward(x, self.params[0], self.params[1], self.relu,
                                             check_finite=False)
        if training:
            self._x, self._y = x, y
        return y

    def backward(self, dy):
        x, w = self._x, self.params[0]
        if self._reuse_bwd:
            out = (self._scratch("dx", x.shape, x.dtype) if self.need_dx else None,
                   self._scratch("dw", w.shape, w.dtype),
                   self._scratch("db", (self.out_features,), w.dtype))
            # dy is a kept buffer of the layer after this one: the ReLU mask may go into it
            result = self._backend.linear_backward(x, w, self._y, dy, self.relu, out=out,
                                                   work=dy if self.relu else None, check=False,
                                                   **self._bwd_kwargs)
        else:
            result = self._backend.linear_backward(x, w, self._y, dy, self.relu,
                                                   **self._bwd_kwargs)
        dx, self.grads[0], self.grads[1] = result
        self._x = self._y = None
        return dx


class Conv2d(_Parametric):
    """2-D convolution over NCHW input; weight (out_channels, in_channels, kH, kW)."""

    FORWARD, BACKWARD = "conv2d_forward", "conv2d_backward"

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *,
                 init="auto"):
        super().__init__(init)
        self.in_channels = _int_arg("in_channels", in_channels, 1)
        self.out_channels = _int_arg("out_channels", out_channels, 1)
        self.kernel_size = _pair_arg("kernel_size", kernel_size, 1)
        self.stride = _int_arg("stride", stride, 1)
        # padding="same": output size = input size; odd square kernels at stride 1 only, since
        # the kernels pad the same amount on every side
        self.same = isinstance(padding, str)
        if self.same:
            kh, kw = self.kernel_size
            if padding != "same":
                raise ValueError(f"padding must be an int or 'same', got {padding!r}")
            if kh != kw or kh % 2 == 0 or self.stride != 1:
                raise ValueError(f"padding='same' needs an odd square kernel and stride 1, "
                                 f"got kernel_size {self.kernel_size}, stride {self.stride}")
            padding = (kh - 1) // 2
        self.padding = _int_arg("padding", padding, 0)
        # set by Sequential: the MaxPool2d (stride == kernel) after this layer (and its ReLU),
        # run inside this layer, in one kernel where the backend's fused kernel takes the shapes
        self.pool = None
        self._fuse_memo = {}
        self._fused_step = False

    def config(self):
        kh, kw = self.kernel_size
        cfg = {"in_channels": self.in_channels, "out_channels": self.out_channels,
               "kernel_size": kh if kh == kw else [kh, kw], "stride": self.stride,
               "padding": "same" if self.same else self.padding}
        if self.init != "auto":
            cfg["init"] = self.init
        return cfg

    def __repr__(self):
        kh, kw = self.kernel_size
        k = kh if kh == kw else (kh, kw)
        text = f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={k}"
        if self.stride != 1:
            text += f", stride={self.stride}"
        if self.same:
            text += ", padding='same'"
        elif self.padding:
            text += f", padding={self.padding}"
        if self.init != "auto":
            text += f", init={self.init!r}"
        return text + ")"

    def param_shapes(self):
        return {"weight": (self.out_channels, self.in_channels, *self.kernel_size),
                "bias": (self.out_channels,)}

    def fans(self):
        area = self.kernel_size[0] * self.kernel_size[1]
        return self.in_channels * area, self.out_channels * area

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ValueError(f"{self!r} expects input of shape ({self.in_channels}, H, W) per "
                             f"sample, got {input_shape}")
        _, h, w = input_shape
        ho = _out_size(h, self.kernel_size[0], self.stride, self.padding, self, "height")
        wo = _out_size(w, self.kernel_size[1], self.stride, self.padding, self, "width")
        return (self.out_channels, ho, wo)

    def flops(self, input_shape):
        co, ho, wo = self.output_shape(input_shape)
        kh, kw = self.kernel_size
        return (2 * self.in_channels * kh * kw + 1) * co * ho * wo

    def _bind(self):
        super()._bind()
        self._fuse_memo = {}  # need_dx or the backend may have changed

    def _fuses(self, x_shape, training):
        """Whether the fused kernels take this batch (and, training, the backward pass too)."""
        key = (x_shape, training)
        fuses = self._fuse_memo.get(key)
        if fuses is None:
            fuses = self._fuse_memo[key] = self._backend.conv2d_maxpool_fusable(
                x_shape, self.params[0].shape, self.params[0].dtype, self.stride, self.padding,
                self.pool.kernel_size, need_dx=self.need_dx and training)
        return fuses

    def forward(self, x, training=False):
        if not self.params:
            self.initialize()
        pool = self.pool
        if pool is None:
            return self._conv_forward(x, training)
        fused = self._fuses(x.shape, training)
        if training:
            self._fused_step = fused
        if not fused:  # the two kernels, exactly as when the layers run one by one
            return pool.forward(self._conv_forward(x, training), training)
        shape = pool._batch_output_shape(self._batch_output_shape(x.shape))
        if training and self.reuse:
            out = (self._scratch("pooled", shape, x.dtype),
                   self._scratch("argmax", shape, np.int32))
        elif self.reuse:  # evaluating: a fresh output, but the argmax is thrown away
            out = (self.backend.xp.empty(shape, x.dtype),
                   self._scratch("eval_argmax", shape, np.int32))
        else:
            out = None
        w, b = self.params
        # training passes write into this layer's own buffers: the backend may trust them
        y, argmax = self._backend.conv2d_maxpool_forward(
            x, w, b, self.stride, self.padding, self.relu, pool.kernel_size,
            check_finite=False, out=out, check=not (training and self.reuse))
        if training:
            self._x, self._y, self._argmax = x, y, argmax
        return y

    def _conv_forward(self, x, training):
        w, b = self.params
        if training and self._reuse_fwd:
            shape = self._batch_output_shape(x.shape)
            y = self._backend.conv2d_forward(x, w, b, self.stride, self.padding, self.relu,
                                             check_finite=False,
                                             out=self._scratch("y", shape, x.dtype))
        else:
            y = self._backend.conv2d_forward(x, w, b, self.stride, self.padding, self.relu,
                                             check_finite=False)
        if training:
            self._x, self._y = x, y
        return y

    def backward(self, dy):
        if self.pool is not None:
            if self._fused_step:
                return self._backward_fused(dy)
            dy = self.pool.backward(dy)
        x, w = self._x, self.params[0]
        if self._reuse_bwd:
            out = (self._scratch("dx", x.shape, x.dtype) if self.need_dx else None,
                   self._scratch("dw", w.shape, w.dtype),
                   self._scratch("db", (self.out_channels,), w.dtype))
            result = self._backend.conv2d_backward(x, w, self._y, dy, self.stride, self.padding,
                                                   self.relu, out=out, **self._bwd_kwargs)
        else:
            result = self._backend.conv2d_backward(x, w, self._y, dy, self.stride, self.padding,
                                                   self.relu, **self._bwd_kwargs)
        dx, self.grads[0], self.grads[1] = result
        self._x = self._y = None
        return dx

    def _backward_fused(self, dy):
        x, w = self._x, self.params[0]
        out = None
        if self.reuse:
            out = (self._scratch("dx", x.shape, x.dtype) if self.need_dx else None,
                   self._scratch("dw", w.shape, w.dtype),
                   self._scratch("db", (self.out_channels,), w.dtype))
        dx, self.grads[0], self.grads[1] = self._backend.conv2d_maxpool_backward(
            x, w, self._y, self._argmax, dy, self.stride, self.padding, self.relu,
            self.pool.kernel_size, out=out, check=out is None, **self._bwd_kwargs)
        self._x = self._y = self._argmax = None
        return dx


class _Pool2d(Layer):
    """A kernel_size x kernel_size window (stride defaults to kernel_size, no padding) over each
    (H, W) plane: the configuration and shapes that max and average pooling share."""

    def __init__(self, kernel_size=2, stride=None):
        super().__init__()
        self.kernel_size = _int_arg("kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else _int_arg("stride", stride, 1)

    def config(self):
        cfg = {"kernel_size": self.kernel_size}
        if self.stride != self.kernel_size:
            cfg["stride"] = self.stride
        return cfg

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"{self!r} expects (C, H, W) per sample, got {input_shape}")
        c, h, w = input_shape
        k, s = self.kernel_size, self.stride
        return (c, _out_size(h, k, s, 0, self, "height"), _out_size(w, k, s, 0, self, "width"))


class MaxPool2d(_Pool2d):
    """Max over kernel_size x kernel_size windows (stride defaults to kernel_size), no padding.
    With stride == kernel_size, right after a Conv2d (and its ReLU), Sequential runs it inside
    the Conv2d where the backend has a fused conv + max-pool kernel."""

    def __init__(self, kernel_size=2, stride=None):
        super().__init__(kernel_size, stride)
        self._reuse_fwd = self._reuse_bwd = False

    def flops(self, input_shape):
        c, ho, wo = self.output_shape(input_shape)
        return c * ho * wo * (self.kernel_size ** 2 - 1)  # comparisons

    def _bind(self):
        b = self.backend
        self._reuse_fwd = self.reuse and "maxpool2d_forward" in b.fills_out
        self._reuse_bwd = self.reuse and "maxpool2d_backward" in b.fills_out

    def forward(self, x, training=False):
        b = self.backend
        if training and self._reuse_fwd:
            shape = self._batch_output_shape(x.shape)
            y, argmax = b.maxpool2d_forward(
                x, self.kernel_size, self.stride, check_finite=False,
                out=(self._scratch("y", shape, x.dtype), self._scratch("argmax", shape, np.int32)))
        else:
            y, argmax = b.maxpool2d_forward(x, self.kernel_size, self.stride, check_finite=False)
        if training:
            self._argmax, self._x_shape = argmax, x.shape
        return y

    def backward(self, dy):
        if self._reuse_bwd:
            dx = self._backend.maxpool2d_backward(
                dy, self._argmax, self._x_shape, self.kernel_size, self.stride,
                check_finite=False, out=self._scratch("dx", self._x_shape, dy.dtype))
        else:
            dx = self._backend.maxpool2d_backward(dy, self._argmax, self._x_shape,
                                                  self.kernel_size, self.stride,
                                                  check_finite=False)
        self._argmax = None
        return dx


class Flatten(Layer):
    """(N, ...) -> (N, features): a view, no copy."""

    def output_shape(self, input_shape):
        return (math.prod(input_shape),)

    def forward(self, x, training=False):
        if training:
            self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._x_shape)


class ReLU(Layer):
    """max(x, 0). Folded into the kernel of a Linear or Conv2d right before it by Sequential."""

    def flops(self, input_shape):
        return math.prod(input_shape)

    def forward(self, x, training=False):
        xp = self.backend.xp
        if training:
            self._y = y = xp.maximum(x, 0, out=self._scratch("y", x.shape, x.dtype)
                                     if self.reuse else None)
            return y
        return xp.maximum(x, 0)

    def backward(self, dy):
        dx = self._backend.xp.multiply(dy, self._y > 0, out=self._scratch("dx", dy.shape, dy.dtype)
                                       if self.reuse else None)
        self._y = None
        return dx


class Sigmoid(Layer):
    """1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2, which cannot overflow."""

    def flops(self, input_shape):
        return 4 * math.prod(input_shape)

    def forward(self, x, training=False):
        xp = self.backend.xp
        y = xp.multiply(x, x.dtype.type(0.5), out=self._scratch("y", x.shape, x.dtype)
                        if training and self.reuse else None)
        xp.tanh(y, out=y)
        y += 1
        y *= 0.5
        if training:
            self._y = y
        return y

    def backward(self, dy):
        y = self._y
        self._y = None
        dx = self._backend.xp.subtract(1, y, out=self._scratch("dx", y.shape, y.dtype)
                                       if self.reuse else None)
        dx *= y
        dx *= dy
        return dx


class Tanh(Layer):
    def flops(self, input_shape):
        return 2 * math.prod(input_shape)

    def forward(self, x, training=False):
        xp = self.backend.xp
        if training:
            self._y = y = xp.tanh(x, out=self._scratch("y", x.shape, x.dtype)
                                  if self.reuse else None)
            return y
        return xp.tanh(x)

    def backward(self, dy):
        y = self._y
        self._y = None
        dx = self._backend.xp.multiply(y, y, out=self._scratch("dx", y.shape, y.dtype)
                                       if self.reuse else None)
        xp_sub = self._backend.xp.subtract
        xp_sub(1, dx, out=dx)
        dx *= dy
        return dx


class Dropout(Layer):
    """Zero each input with probability p while training, scaling the rest by 1/(1-p)
    (inverted dropout, so evaluation is the identity). Masks come from fastnn's random stream."""

    def __init__(self, p=0.5):
        super().__init__()
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
            raise TypeError(f"p must be a number, got {type(p).__name__}")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p must be in [0, 1), got {p}")
        self.p = float(p)

    def config(self):
        return {"p": self.p}

    def flops(self, input_shape):
        return math.prod(input_shape)

    def forward(self, x, training=False):
        if not training:  # inference writes nothing on the layer (threads may share it)
            return x
        if self.p == 0.0:
            self._scale = None
            return x
        xp = self.backend.xp
        keep = _random.uniform(xp, x.shape, x.dtype) >= self.p
        self._scale = keep * x.dtype.type(1.0 / (1.0 - self.p))
        return x * self._scale

    def backward(self, dy):
        scale = self._scale
        self._scale = None
        return dy if scale is None else dy * scale


LAYER_TYPES = {cls.__name__: cls for cls in
               (Linear, Conv2d, MaxPool2d, Flatten, ReLU, Sigmoid, Tanh, Dropout)}
