"""Layers: Linear, Conv2d, MaxPool2d, Flatten, ReLU, Sigmoid, Tanh, Dropout (more in
extra_layers.py).

A layer is configuration and parameters: its constructor arguments (`config()`), its parameter
arrays on a backend (`params`, with `grads` parallel to them, written by each backward pass),
and the shapes and FLOPs it implies. How it runs -- which kernel, fused with what, into which
buffers -- is decided by the plan Sequential compiles for a backend (fastnn.plan); a layer
called on its own runs a one-layer plan. Shapes given to `output_shape` and `flops` are per
sample, without the batch axis.

Parameters are created by `initialize()`, which Sequential calls with the initializer suited to
the activation that follows (He before ReLU, Glorot otherwise); a layer used on its own
initializes itself on first use.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _random, backends, validation
from .backends.base import Backend

# Layers and models start on the compiled backend, or on the reference where it is not built
# (a model is plain arrays until it runs; Trainer(backend="cpu") then says why cpu is missing).
DEFAULT_BACKEND = "cpu"
FALLBACK_BACKEND = "numpy"
FLOAT_DTYPES = validation.FLOAT_DTYPES
INITIALIZERS = ("auto", "he", "glorot")
_int_arg = validation.integer
_pair_arg = validation.integer_pair


def _out_size(size, kernel, stride, padding, layer, axis):
    if size + 2 * padding < kernel:
        raise ValueError(
            f"{layer!r}: kernel {kernel} does not fit input {axis} {size} with padding {padding}"
        )
    return (size + 2 * padding - kernel) // stride + 1


def default_backend():
    try:
        return backends.get(DEFAULT_BACKEND)
    except backends.BackendUnavailable:
        return backends.get(FALLBACK_BACKEND)


class Layer:
    """Base class. Subclasses set `param_names` and implement output_shape (and flops); the
    computation lives in the layer's plan step (fastnn.plan)."""

    param_names: tuple[str, ...] = ()
    # saved, untrained arrays (BatchNorm's running statistics), parallel to `buffers`
    buffer_names: tuple[str, ...] = ()
    # set by fastnn.plan: layer -> a one-layer step, for a layer called on its own (layers.py
    # does not import the plan, which imports the layers)
    _alone: Any = None

    def __init__(self) -> None:
        self.params: list[Any] = []
        self.grads: list[Any] = []
        self.buffers: list[Any] = []  # parallel to buffer_names
        self._backend: Any = None
        self._own_step: Any = None

    # ---- configuration ------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """Constructor arguments, JSON-friendly (the architecture saved with a model)."""
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # ---- parameters and backend ---------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        """The backend the parameters live on (the default one until they are placed)."""
        if self._backend is None:
            self._backend = default_backend()
        return self._backend

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """{name: shape} of this layer's parameters, computed from the configuration alone."""
        return {}

    def param_count(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes().values())

    def initialize(
        self, init: str | None = "auto", dtype: Any = np.float32, backend: Any = None
    ) -> Layer:
        """(Re)create the parameters: biases zero, weights from fastnn's random stream."""
        if backend is not None:
            self._backend = backends.get(backend)
        self.params = []
        self.grads = [None] * len(self.param_names)
        return self

    def set_params(self, arrays: Sequence[Any], backend: Any = None) -> None:
        """Take these arrays of `backend` (default: the layer's) as the parameters (shapes and
        dtypes already checked)."""
        if backend is not None:
            self._backend = backends.get(backend)
        self.params = list(arrays)
        self.grads = [None] * len(self.params)

    def set_buffers(self, arrays: Sequence[Any], backend: Any = None) -> None:
        """Take these arrays of `backend` (default: the layer's) as the buffers."""
        if backend is not None:
            self._backend = backends.get(backend)
        self.buffers = list(arrays)

    def to(self, backend: Any, dtype: Any = None) -> Layer:
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
        self._own_step = None
        return self

    # ---- shapes and cost ----------------------------------------------------------------------

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(input_shape)

    def flops(self, input_shape: Sequence[int]) -> int:
        """Floating-point operations of the forward pass for one sample (a multiply-add is 2)."""
        return 0

    # ---- running on its own -------------------------------------------------------------------

    def forward(self, x: Any, training: bool = False) -> Any:
        """This layer alone on a batch of its backend's arrays (in a model, the model's plan
        runs it). In training mode it keeps what backward() needs."""
        if self.param_names and not self.params:
            self.initialize()
        step = self._own_step
        if step is None or step.backend is not self.backend:
            step = self._own_step = Layer._alone(self, self.backend)
        return step.forward(x, training)

    def backward(self, dy: Any) -> Any:
        """Gradient of the input for the last training forward(); parameter gradients go to
        `grads`."""
        return self._own_step.backward(dy)

    def __call__(self, x: Any, training: bool = False) -> Any:
        return self.forward(x, training)


class _Parametric(Layer):
    """Linear and Conv2d: a weight and a bias."""

    param_names = ("weight", "bias")

    def __init__(self, init: str) -> None:
        super().__init__()
        if init not in INITIALIZERS:
            raise ValueError(f"init must be one of {INITIALIZERS}, got {init!r}")
        self.init = init

    @property
    def weight(self) -> Any:
        if not self.params:
            self.initialize()
        return self.params[0]

    @property
    def bias(self) -> Any:
        if not self.params:
            self.initialize()
        return self.params[1]

    def fans(self):
        raise NotImplementedError

    def initialize(
        self, init: str | None = None, dtype: Any = np.float32, backend: Any = None
    ) -> Layer:
        """He uniform (for ReLU) or Glorot uniform weights, zero bias. `init` None or "auto"
        uses the layer's own setting; "auto" there means Glorot (Sequential passes "he" when
        a ReLU follows)."""
        super().initialize(backend=backend)
        if init in (None, "auto"):
            init = self.init
        if init == "auto":
            init = "glorot"
        if init not in INITIALIZERS:
            raise ValueError(f"init must be one of {INITIALIZERS}, got {init!r}")
        fan_in, fan_out = self.fans()
        limit = math.sqrt(6.0 / fan_in) if init == "he" else math.sqrt(6.0 / (fan_in + fan_out))
        shapes = self.param_shapes()
        # drawn in float64 so float32 and float64 models from one seed hold the same weights
        weight = _random.generator().uniform(-limit, limit, shapes["weight"]).astype(dtype)
        bias = np.zeros(shapes["bias"], dtype=dtype)
        self.set_params([self.backend.asarray(weight), self.backend.asarray(bias)])
        return self


class Linear(_Parametric):
    """y = x @ weight.T + bias; weight (out_features, in_features), as in PyTorch."""

    def __init__(self, in_features: int, out_features: int, *, init: str = "auto") -> None:
        super().__init__(init)
        self.in_features = _int_arg("in_features", in_features, 1)
        self.out_features = _int_arg("out_features", out_features, 1)

    def config(self) -> dict[str, Any]:
        cfg = {"in_features": self.in_features, "out_features": self.out_features}
        if self.init != "auto":
            cfg["init"] = self.init
        return cfg

    def __repr__(self):
        extra = f", init={self.init!r}" if self.init != "auto" else ""
        return f"Linear({self.in_features}, {self.out_features}{extra})"

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}

    def fans(self):
        return self.in_features, self.out_features

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        if tuple(input_shape) != (self.in_features,):
            hint = " (add nn.Flatten() before it)" if len(input_shape) > 1 else ""
            raise ValueError(
                f"{self!r} expects {self.in_features} features per sample, "
                f"got input shape {tuple(input_shape)}{hint}"
            )
        return (self.out_features,)

    def flops(self, input_shape: Sequence[int]) -> int:
        return 2 * self.in_features * self.out_features + self.out_features


class Conv2d(_Parametric):
    """2-D convolution over NCHW input; weight (out_channels, in_channels, kH, kW)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int = 1,
        padding: int | str = 0,
        *,
        init: str = "auto",
    ) -> None:
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
                raise ValueError(
                    f"padding='same' needs an odd square kernel and stride 1, "
                    f"got kernel_size {self.kernel_size}, stride {self.stride}"
                )
            padding = (kh - 1) // 2
        self.padding = _int_arg("padding", padding, 0)

    def config(self) -> dict[str, Any]:
        kh, kw = self.kernel_size
        cfg = {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": kh if kh == kw else [kh, kw],
            "stride": self.stride,
            "padding": "same" if self.same else self.padding,
        }
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

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            "weight": (self.out_channels, self.in_channels, *self.kernel_size),
            "bias": (self.out_channels,),
        }

    def fans(self):
        area = self.kernel_size[0] * self.kernel_size[1]
        return self.in_channels * area, self.out_channels * area

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3 or input_shape[0] != self.in_channels:
            raise ValueError(
                f"{self!r} expects input of shape ({self.in_channels}, H, W) per "
                f"sample, got {input_shape}"
            )
        _, h, w = input_shape
        ho = _out_size(h, self.kernel_size[0], self.stride, self.padding, self, "height")
        wo = _out_size(w, self.kernel_size[1], self.stride, self.padding, self, "width")
        return (self.out_channels, ho, wo)

    def flops(self, input_shape: Sequence[int]) -> int:
        co, ho, wo = self.output_shape(input_shape)
        kh, kw = self.kernel_size
        return (2 * self.in_channels * kh * kw + 1) * co * ho * wo


class _Pool2d(Layer):
    """A kernel_size x kernel_size window (stride defaults to kernel_size, no padding) over each
    (H, W) plane: the configuration and shapes that max and average pooling share."""

    def __init__(self, kernel_size: int = 2, stride: int | None = None) -> None:
        super().__init__()
        self.kernel_size = _int_arg("kernel_size", kernel_size, 1)
        self.stride = self.kernel_size if stride is None else _int_arg("stride", stride, 1)

    def config(self) -> dict[str, Any]:
        cfg = {"kernel_size": self.kernel_size}
        if self.stride != self.kernel_size:
            cfg["stride"] = self.stride
        return cfg

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"{self!r} expects (C, H, W) per sample, got {input_shape}")
        c, h, w = input_shape
        k, s = self.kernel_size, self.stride
        return (c, _out_size(h, k, s, 0, self, "height"), _out_size(w, k, s, 0, self, "width"))


class MaxPool2d(_Pool2d):
    """Max over kernel_size x kernel_size windows (stride defaults to kernel_size), no padding.
    With stride == kernel_size, right after a Conv2d (and its ReLU), a model runs it inside
    the Conv2d's step where the backend has a fused conv + max-pool kernel."""

    def flops(self, input_shape: Sequence[int]) -> int:
        c, ho, wo = self.output_shape(input_shape)
        return c * ho * wo * (self.kernel_size**2 - 1)  # comparisons


class Flatten(Layer):
    """(N, ...) -> (N, features): a view, no copy."""

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        return (math.prod(input_shape),)


class ReLU(Layer):
    """max(x, 0). Folded into the kernel of a Linear or Conv2d right before it by Sequential."""

    def flops(self, input_shape: Sequence[int]) -> int:
        return math.prod(input_shape)


class Sigmoid(Layer):
    """1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2, which cannot overflow."""

    def flops(self, input_shape: Sequence[int]) -> int:
        return 4 * math.prod(input_shape)


class Tanh(Layer):
    def flops(self, input_shape: Sequence[int]) -> int:
        return 2 * math.prod(input_shape)


class Dropout(Layer):
    """Zero each input with probability p while training, scaling the rest by 1/(1-p)
    (inverted dropout, so evaluation is the identity). Masks come from fastnn's random stream."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real):
            raise TypeError(f"p must be a number, got {type(p).__name__}")
        if not 0.0 <= p < 1.0:
            raise ValueError(f"p must be in [0, 1), got {p}")
        self.p: float = float(p)

    def config(self) -> dict[str, Any]:
        return {"p": self.p}

    def flops(self, input_shape: Sequence[int]) -> int:
        return math.prod(input_shape)


LAYER_TYPES = {
    cls.__name__: cls for cls in (Linear, Conv2d, MaxPool2d, Flatten, ReLU, Sigmoid, Tanh, Dropout)
}
