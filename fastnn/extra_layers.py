"""Layers beyond the first set: BatchNorm1d, BatchNorm2d, AvgPool2d, GlobalAvgPool2d,
LeakyReLU: configuration and parameters, as the others; the plan (fastnn.plan: BatchNormStep,
AvgPoolStep, GlobalAvgPoolStep, LeakyReLUStep) runs them through their backend's kernels
(fastnn/backends/numpy_layers.py is the reference).

Batch normalization keeps running statistics (float64, whatever the model's dtype) next to its
trainable weight and bias; they are saved and loaded with the model (`buffer_names`) but never
touched by an optimizer. In evaluation a BatchNorm right after a Linear or Conv2d is folded
into that layer's weights (the plan's evaluation steps), so `predict` runs one kernel for both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .layers import Layer, _int_arg, _Pool2d
from .validation import real


class _BatchNorm(Layer):
    """Normalize each channel (axis 1) by the batch's mean and variance while training and by
    the running statistics in evaluation; then scale by `weight` and shift by `bias` (when
    affine). momentum: how far the running statistics move towards each batch's (PyTorch's
    convention: running = (1 - momentum) * running + momentum * batch)."""

    input_ndim = 0  # per-sample dimensions: 1 for BatchNorm1d, 3 for BatchNorm2d
    buffer_names = ("running_mean", "running_var")

    def __init__(
        self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, affine: bool = True
    ) -> None:
        super().__init__()
        self.num_features = _int_arg("num_features", num_features, 1)
        self.eps = real("eps", eps, 0.0, min_inclusive=False)
        self.momentum = real("momentum", momentum, 0.0, 1.0)
        if not isinstance(affine, (bool, np.bool_)):
            raise TypeError(f"affine must be a bool, got {type(affine).__name__}")
        self.affine = bool(affine)
        self.param_names = ("weight", "bias") if self.affine else ()

    def config(self) -> dict[str, Any]:
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

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        c = (self.num_features,)
        shapes: dict[str, tuple[int, ...]] = {"weight": c, "bias": c} if self.affine else {}
        shapes.update(running_mean=c, running_var=c)
        return shapes

    def buffer_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"running_mean": (self.num_features,), "running_var": (self.num_features,)}

    def initialize(
        self, init: str | None = None, dtype: Any = np.float32, backend: Any = None
    ) -> Layer:
        """weight 1, bias 0, running mean 0, running variance 1."""
        super().initialize(backend=backend)
        b = self.backend
        c = self.num_features
        if self.affine:
            self.set_params([b.asarray(np.ones(c, dtype)), b.asarray(np.zeros(c, dtype))])
        self.buffers = [b.asarray(np.zeros(c)), b.asarray(np.ones(c))]
        return self

    def to(self, backend: Any, dtype: Any = None) -> Layer:
        old = self.backend
        super().to(backend, dtype)
        new = self.backend
        self.buffers = [
            new.asarray(np.asarray(old.to_numpy(a), dtype=np.float64)) for a in self.buffers
        ]
        return self

    def fold_factors(self) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift), float64 numpy (C,): evaluation computes x * scale + shift (then the
        ReLU when fused), which is what a preceding Linear or Conv2d folds into its weights."""
        b = self.backend
        if self.affine:
            gamma, beta = (np.asarray(b.to_numpy(a), np.float64) for a in self.params)
        else:
            gamma, beta = np.ones(self.num_features), np.zeros(self.num_features)
        mean, var = (np.asarray(b.to_numpy(a)) for a in self.buffers)
        scale = gamma / np.sqrt(var + self.eps)
        return scale, beta - mean * scale

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        if len(input_shape) != self.input_ndim or input_shape[0] != self.num_features:
            want = "(C,)" if self.input_ndim == 1 else "(C, H, W)"
            raise ValueError(
                f"{self!r} expects input of shape {want} with C = "
                f"{self.num_features} per sample, got {input_shape}"
            )
        return input_shape

    def flops(self, input_shape: Sequence[int]) -> int:
        return 2 * math.prod(input_shape)


class BatchNorm1d(_BatchNorm):
    """Batch normalization of (N, C) features (after a Linear)."""

    input_ndim = 1


class BatchNorm2d(_BatchNorm):
    """Batch normalization of (N, C, H, W) maps per channel, over N, H and W (after a Conv2d)."""

    input_ndim = 3


class AvgPool2d(_Pool2d):
    """Mean over kernel_size x kernel_size windows (stride defaults to kernel_size), no padding."""

    def flops(self, input_shape: Sequence[int]) -> int:
        c, ho, wo = self.output_shape(input_shape)
        return c * ho * wo * self.kernel_size**2


class GlobalAvgPool2d(Layer):
    """(N, C, H, W) -> (N, C): the mean of each channel's map (no Flatten needed after it)."""

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        input_shape = tuple(input_shape)
        if len(input_shape) != 3:
            raise ValueError(f"{self!r} expects (C, H, W) per sample, got {input_shape}")
        return (input_shape[0],)

    def flops(self, input_shape: Sequence[int]) -> int:
        return math.prod(input_shape)


class LeakyReLU(Layer):
    """x where x > 0, else negative_slope * x."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        super().__init__()
        self.negative_slope = real("negative_slope", negative_slope, 0.0)

    def config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}

    def flops(self, input_shape: Sequence[int]) -> int:
        return math.prod(input_shape)


EXTRA_LAYER_TYPES = {
    cls.__name__: cls for cls in (BatchNorm1d, BatchNorm2d, AvgPool2d, GlobalAvgPool2d, LeakyReLU)
}
