"""Sequential: a stack of layers, compiled for its backend into a plan that runs them.

The plan (fastnn.plan) looks at neighbours: a Linear, Conv2d or BatchNorm directly followed by
ReLU computes the ReLU inside its kernel (the ReLU layer stays in `layers` for the architecture
and the summary, but runs inside the step before it); on a backend with fused conv + max-pool
kernels (cpu), a Conv2d also runs the MaxPool2d (stride == kernel) that follows it or its ReLU,
so the convolution's output never goes to memory; evaluation folds each BatchNorm into the
Linear or Conv2d before it. A layer's "auto" initializer becomes He when the next activation is
a ReLU, Glorot otherwise. The first layer with parameters does not compute the gradient of its
input.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _random, backends, fileformat, validation
from . import extra_layers as XL
from . import layers as L
from . import plan as _plan
from ._version import __version__
from .backends.base import Backend
from .datasets import nonfinite_message, to_float
from .inference import DensePlan

# Layers that only move, select, average or normalize values: they do not decide the
# initializer (a Conv2d -> BatchNorm2d -> ReLU gets He's, as Conv2d -> ReLU does).
_SHAPE_ONLY = (L.Flatten, L.MaxPool2d, L.Dropout, XL._BatchNorm, XL.AvgPool2d, XL.GlobalAvgPool2d)
# Every layer type a saved architecture may name.
LAYER_TYPES = {**L.LAYER_TYPES, **XL.EXTRA_LAYER_TYPES}


class ParameterSlot:
    """One parameter of a model, read live (load_state_dict and moves replace the arrays):
    `name` ("<layer index>.<param name>"), `value` and `grad` (None before a backward pass)."""

    __slots__ = ("index", "layer", "name")

    def __init__(self, name, layer, index):
        self.name, self.layer, self.index = name, layer, index

    @property
    def value(self) -> Any:
        return self.layer.params[self.index]

    @property
    def grad(self) -> Any:
        return self.layer.grads[self.index]

    def __repr__(self):
        return f"ParameterSlot({self.name!r})"


def _init_for(layers, i):
    """He when the next activation after layer i is ReLU, else Glorot (layer's own init wins)."""
    own = layers[i].init
    if own != "auto":
        return own
    for following in layers[i + 1 :]:
        if isinstance(following, (L.ReLU, XL.LeakyReLU)):
            return "he"
        if not isinstance(following, _SHAPE_ONLY):
            break
    return "glorot"


class Sequential:
    """Layers applied in order: `nn.Sequential(nn.Flatten(), nn.Linear(784, 10))`.

    `input_shape` (per sample, optional) lets `summary()` and the trainer check shapes before
    any work; it is set from the data on the first `fit` when not given.
    """

    layers: list[L.Layer]
    dtype: np.dtype
    _backend: Any

    def __init__(
        self,
        *layers: L.Layer | Sequence[L.Layer],
        input_shape: Sequence[int] | None = None,
        dtype: Any = np.float32,
        backend: Any = None,
        seed: int | None = None,
    ) -> None:
        """`backend` defaults to "cpu" (or "numpy" where the compiled kernels are not built).
        `seed` (an int) draws the initial weights from a random stream of their own, so the
        model is the same whatever other threads draw; None uses fastnn's current stream."""
        if seed is not None:
            _random.check_seed(seed)
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        seen = set()
        for i, layer in enumerate(layers):
            if not isinstance(layer, L.Layer):
                raise TypeError(f"layer {i} must be a fastnn layer, got {type(layer).__name__}")
            if id(layer) in seen:
                raise ValueError(f"layer {i} ({layer!r}) appears twice; use separate instances")
            seen.add(id(layer))
        self._setup(layers, input_shape, dtype, backend, initialize=False)
        self.reset_parameters(seed)

    # ---- building ------------------------------------------------------------------------------

    @staticmethod
    def _check_shape(shape):
        try:
            shape = tuple(int(s) for s in shape)
        except TypeError:
            raise TypeError(f"input_shape must be a tuple of ints, got {shape!r}") from None
        if not shape or any(s < 1 for s in shape):
            raise ValueError(f"input_shape must be positive sizes, got {shape}")
        return shape

    def _compile(self):
        """Plan the layers for the backend (fastnn.plan); keeps the reuse setting."""
        reuse = self.plan.reuse if self.plan is not None else False
        self.plan = _plan.compile(self.layers, self._backend)
        self.plan.set_reuse(reuse)
        self._input_ok = (None, None)  # (per-sample input shape, as the first layer takes it)
        self._dense = None  # the compiled inference plan, built on first predict (False: none)

    def _initialize_all(self):
        for i, layer in enumerate(self.layers):
            if isinstance(layer, L._Parametric):
                layer.initialize(_init_for(self.layers, i), self.dtype, self._backend)
            elif layer.param_names or layer.buffer_names:
                layer.initialize(dtype=self.dtype, backend=self._backend)

    def reset_parameters(self, seed: int | None = None) -> Sequential:
        """Draw fresh weights from fastnn's current random stream (as at construction), or
        from a stream of their own seeded with `seed`."""
        if seed is None:
            self._initialize_all()
        else:
            with _random.using(_random.Stream.from_seed(seed)):
                self._initialize_all()
        return self

    # ---- backend, dtype, modes -----------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        return self._backend

    def to(self, backend: Any = None, dtype: Any = None) -> Sequential:
        """Move the parameters to `backend` ("numpy", "cpu", "cuda") and/or `dtype`; returns self.
        Gradients are dropped; an optimizer re-attaches its state at the next fit."""
        new = self._backend if backend is None else backends.get(backend)
        dtype = self.dtype if dtype is None else validation.float_dtype(dtype)
        if new is self._backend and dtype == self.dtype:
            return self
        _check_backend_dtype(new, dtype)
        for layer in self.layers:
            layer.to(new, dtype)
        self._backend = new
        self.dtype = dtype
        self._compile()
        return self

    def set_reuse(self, flag: bool) -> Sequential:
        """Let training passes write outputs and gradients into arrays kept between steps (the
        Trainer does this during fit). Off (the default) frees them: every forward then returns
        fresh arrays a caller may keep."""
        self.plan.set_reuse(flag)
        return self

    def train(self, mode: bool = True) -> Sequential:
        self.training = bool(mode)
        return self

    def eval(self) -> Sequential:
        return self.train(False)

    # ---- parameters ----------------------------------------------------------------------------

    def parameter_slots(self) -> list[ParameterSlot]:
        """[ParameterSlot] in order: each trained parameter's name and its live value and
        gradient (what an optimizer, a profiler or a checkpoint reads)."""
        return [
            ParameterSlot(f"{i}.{name}", layer, j)
            for i, layer in enumerate(self.layers)
            for j, name in enumerate(layer.param_names)
        ]

    def named_parameters(self) -> dict[str, Any]:
        """{"<layer index>.<name>": backend array}, e.g. "1.weight"."""
        return {slot.name: slot.value for slot in self.parameter_slots()}

    def parameters(self) -> list[Any]:
        return [slot.value for slot in self.parameter_slots()]

    def gradients(self) -> list[Any]:
        """Gradients from the last backward pass, parallel to parameters() (None before one)."""
        return [slot.grad for slot in self.parameter_slots()]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            f"{i}.{name}": tuple(shape)
            for i, layer in enumerate(self.layers)
            for name, shape in layer.param_shapes().items()
        }

    def param_count(self) -> int:
        return sum(math.prod(s) for s in self.param_shapes().values())

    def _buffer_slots(self):
        """(layer, j, "<layer index>.<name>") of the saved, untrained arrays (BatchNorm's
        running statistics, float64)."""
        return [
            (layer, j, f"{i}.{name}")
            for i, layer in enumerate(self.layers)
            for j, name in enumerate(layer.buffer_names)
        ]

    def state_dtypes(self) -> dict[str, np.dtype]:
        """{name: dtype} of state_dict()'s arrays: the model's dtype, float64 for running
        statistics."""
        dtypes = {name: self.dtype for name in self.param_shapes()}
        dtypes.update((name, np.dtype(np.float64)) for _, _, name in self._buffer_slots())
        return dtypes

    def state_dict(self) -> dict[str, np.ndarray]:
        """{name: numpy copy of the parameter}, running statistics included."""
        b = self._backend
        state = {
            slot.name: np.array(b.to_numpy(slot.value), copy=True)
            for slot in self.parameter_slots()
        }
        state.update(
            (name, np.array(b.to_numpy(layer.buffers[j]), dtype=np.float64, copy=True))
            for layer, j, name in self._buffer_slots()
        )
        return state

    def load_state_dict(self, state: dict[str, Any]) -> Sequential:
        """Copy parameters in from {name: array}; names, shapes and dtypes must match exactly."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        expected = self.param_shapes()
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise ValueError(
                f"parameter names do not match the model: missing {missing}, unexpected {extra}"
            )
        arrays = {}
        buffers = {name for _, _, name in self._buffer_slots()}
        for name, shape in expected.items():
            value = (
                np.asarray(state[name])
                if isinstance(state[name], np.ndarray)
                else self._backend.to_numpy(state[name])
            )
            if tuple(value.shape) != shape:
                raise ValueError(f"parameter {name} must have shape {shape}, got {value.shape}")
            if name in buffers:  # running statistics: any float dtype, kept as float64
                if value.dtype.kind != "f" or not np.isfinite(value).all():
                    raise ValueError(f"{name} must hold finite floats")
                value = value.astype(np.float64)
            elif value.dtype != self.dtype:
                raise ValueError(f"parameter {name} must be {self.dtype.name}, got {value.dtype}")
            arrays[name] = value
        b = self._backend
        for i, layer in enumerate(self.layers):
            if layer.param_names:
                layer.set_params(
                    [b.asarray(np.array(arrays[f"{i}.{n}"], copy=True)) for n in layer.param_names],
                    backend=b,
                )
            if layer.buffer_names:
                layer.set_buffers(
                    [
                        b.asarray(np.array(arrays[f"{i}.{n}"], copy=True))
                        for n in layer.buffer_names
                    ],
                    backend=b,
                )
        return self

    # ---- shapes ----------------------------------------------------------------------------------

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Per-sample output shape for a per-sample input shape; ValueError naming the layer
        that does not fit."""
        shape = self._sample_shape(tuple(input_shape))
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as exc:
                raise ValueError(
                    f"input of shape {tuple(input_shape)} does not fit the model "
                    f"at layer {i}: {exc}"
                ) from None
        return shape

    def _first_compute_layer(self):
        return next(
            (layer for layer in self.layers if not isinstance(layer, (L.Flatten, L.Dropout))), None
        )

    def _sample_shape(self, shape):
        """(H, W) images become (1, H, W) when the model starts with a one-channel Conv2d."""
        first = self._first_compute_layer()
        if isinstance(first, L.Conv2d) and len(shape) == 2 and first.in_channels == 1:
            return (1, *shape)
        return shape

    def _guess_input_shape(self):
        if self.input_shape is not None:
            return self.input_shape
        first = self._first_compute_layer()
        if isinstance(first, L.Linear):
            return (first.in_features,)
        raise ValueError(
            "the input shape is unknown: pass input_shape=(C, H, W) to summary() or to Sequential"
        )

    # ---- running ---------------------------------------------------------------------------------

    def forward(self, x: Any, training: bool | None = None) -> Any:
        """Outputs for a batch `x` (a backend array of the model's dtype, shape (N, ...)).
        In training mode the layers keep what backward needs."""
        if training is None:
            training = self.training
        return self.plan.forward(x, training)

    __call__ = forward

    def backward(self, doutput: Any) -> None:
        """Gradients of the loss for the last training forward pass, into each layer's grads."""
        self.plan.backward(doutput)

    def prepare_input(self, x: Any, name: str = "x", keep_uint8: bool = False) -> Any:
        """`x` (uint8 images scaled to [0, 1], or floats) as a checked backend array of the
        model's dtype and per-sample shape, e.g. (N, 28, 28) -> (N, 1, 28, 28) for a CNN.
        A device array of the model's backend (CuPy on cuda) is converted where it is.
        keep_uint8: uint8 images on a host backend come back unscaled, in the per-sample shape
        (a view where x allows), for a caller that scales each batch as it gathers it."""
        xp = self._backend.xp
        on_device = isinstance(x, xp.ndarray) and not isinstance(x, np.ndarray)
        if not on_device:
            x = host_array(x)
        if x.ndim < 2:
            raise ValueError(
                f"x must have a sample axis and at least one more, got shape "
                f"{x.shape}{self._one_sample_hint(x.shape)}"
            )
        shape = x.shape[1:]
        known, sample = self._input_ok  # one read: another thread may replace the pair
        if shape != known:  # validated once per per-sample shape
            sample = self._sample_shape(shape)
            try:
                self.output_shape(sample)
            except ValueError as exc:
                raise ValueError(f"{exc}{self._one_sample_hint(x.shape)}") from None
            self._input_ok = (shape, sample)
        if on_device:
            x = self._backend.to_float(x)
        elif keep_uint8 and x.dtype == np.uint8 and xp is np:
            x = np.ascontiguousarray(x)
        else:
            x = to_float(x, name, self.dtype)
        return self._backend.asarray(x.reshape((x.shape[0], *sample)))

    def _one_sample_hint(self, shape):
        """When `shape` would fit as one sample, say how to make it a batch of one."""
        try:
            self.output_shape(self._sample_shape(tuple(shape)))
        except (ValueError, TypeError):
            return ""
        return (
            f"; x looks like one sample of shape {tuple(shape)}: add a batch axis, "
            f"e.g. x[None] or x.reshape(1, {', '.join(map(str, shape))})"
        )

    def _outputs(self, x, batch_size):
        """The model's outputs for `x` in evaluation, `batch_size` (checked by the caller) rows
        at a time."""
        x = self.prepare_input(x)
        n = x.shape[0]
        if n <= batch_size:
            return self.forward(x, False)
        parts = [self.forward(x[i : i + batch_size], False) for i in range(0, n, batch_size)]
        return self._backend.xp.concatenate(parts)

    def _dense_plan(self):
        """The compiled inference plan of an MLP on cpu (fastnn.inference), or None."""
        plan = self._dense
        if plan is None or (plan and not plan.current(self)):
            plan = self._dense = DensePlan.build(self) or False
        return plan or None

    def _plan_input(self, x):
        """x as the plan takes it: 2-D, C-contiguous, the model's dtype (finiteness is checked
        by the plan's kernel); None when it needs the general path's checks and conversion."""
        if (
            type(x) is not np.ndarray
            or x.dtype != self.dtype
            or x.ndim < 2
            or not (x.flags.c_contiguous and x.flags.aligned)
        ):
            return None
        if x.shape[1:] != self._input_ok[0]:
            return None  # prepare_input validates (and remembers) a new per-sample shape
        return x.reshape(x.shape[0], -1) if x.ndim > 2 else x

    def _plan_predict(self, x, batch_size, outputs):
        plan = self._dense_plan()
        if plan is None:
            return None
        xs = self._plan_input(x)
        if xs is None:  # converted and checked (uint8 scaled, NaN refused) by the general path
            xs = self.prepare_input(x)
            xs = xs.reshape(xs.shape[0], -1)
        run = plan.outputs if outputs else plan.predict
        try:
            if xs.shape[0] <= batch_size:
                return run(xs)
            return np.concatenate(
                [run(xs[i : i + batch_size]) for i in range(0, xs.shape[0], batch_size)]
            )
        except ValueError:
            if not np.isfinite(xs).all():  # the kernel's message cannot say where
                raise ValueError(nonfinite_message(x)) from None
            raise

    def predict(self, x: Any, batch_size: int = 1024) -> np.ndarray:
        """Predicted class indices (numpy int64) for uint8 images or float inputs."""
        batch_size = validation.integer("batch_size", batch_size, 1)
        labels = self._plan_predict(x, batch_size, outputs=False)
        if labels is not None:
            return labels
        out = self._outputs(x, batch_size)
        return np.asarray(self._backend.to_numpy(out.argmax(axis=1)), dtype=np.int64)

    def predict_proba(self, x: Any, batch_size: int = 1024) -> np.ndarray:
        """Softmax of the outputs (numpy, rows sum to 1)."""
        batch_size = validation.integer("batch_size", batch_size, 1)
        out = self._plan_predict(x, batch_size, outputs=True)
        if out is None:
            out = self._outputs(x, batch_size)
        xp = self._backend.xp
        e = xp.exp(out - out.max(axis=1, keepdims=True))
        e /= e.sum(axis=1, keepdims=True)
        return self._backend.to_numpy(e)

    # ---- description -----------------------------------------------------------------------------

    def describe(self, input_shape: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """One dict per layer: index, layer, output_shape, params, flops, fused."""
        shape = self._sample_shape(
            self._guess_input_shape() if input_shape is None else self._check_shape(input_shape)
        )
        self.output_shape(shape)  # raises with the layer that does not fit
        rows = []
        for i, layer in enumerate(self.layers):
            flops = layer.flops(shape)
            shape = layer.output_shape(shape)
            rows.append(
                {
                    "index": i,
                    "layer": repr(layer),
                    "output_shape": shape,
                    "params": sum(math.prod(s) for s in layer.param_shapes().values()),
                    "flops": flops,
                    "fused": i in self.plan.fused,
                }
            )
        return rows

    def summary(self, input_shape: Sequence[int] | None = None, file: Any = None) -> None:
        """Print a table: each layer's output shape, parameters and forward FLOPs per sample."""
        rows = self.describe(input_shape)
        table = [("#", "layer", "output shape", "params", "FLOPs")]
        for r in rows:
            name = r["layer"] + ("  (fused into previous)" if r["fused"] else "")
            table.append(
                (
                    str(r["index"]),
                    name,
                    str(r["output_shape"]),
                    f"{r['params']:,}",
                    f"{r['flops']:,}",
                )
            )
        widths = [max(len(row[c]) for row in table) for c in range(5)]
        lines = []
        for k, row in enumerate(table):
            lines.append(
                "  ".join(
                    cell.ljust(w) if c < 3 else cell.rjust(w)
                    for c, (cell, w) in enumerate(zip(row, widths))
                ).rstrip()
            )
            if k == 0:
                lines.append("-" * len(lines[0]))
        total_params = sum(r["params"] for r in rows)
        total_flops = sum(r["flops"] for r in rows)
        lines.append("-" * len(lines[0]))
        lines.append(
            f"parameters: {total_params:,} ({self.dtype.name}, "
            f"{total_params * self.dtype.itemsize / 1e6:.2f} MB)   "
            f"forward FLOPs per sample: {total_flops:,}   backend: {self._backend.name}"
        )
        print("\n".join(lines), file=sys.stdout if file is None else file)

    def config(self) -> dict[str, Any]:
        """The architecture as JSON-friendly data (saved with the weights)."""
        return {
            "layers": [{"type": type(layer).__name__, **layer.config()} for layer in self.layers],
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "dtype": self.dtype.name,
        }

    @classmethod
    def from_config(
        cls, config: dict[str, Any], backend: Any = None, initialize: bool = True
    ) -> Sequential:
        """Rebuild from config(); with initialize=False parameters are left to load_state_dict."""
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError("architecture must be a dict with a 'layers' list")
        built = []
        for i, spec in enumerate(config["layers"]):
            if (
                not isinstance(spec, dict)
                or not isinstance(spec.get("type"), str)
                or spec["type"] not in LAYER_TYPES
            ):
                raise ValueError(f"layer {i}: unknown layer description {spec!r}")
            kwargs = {k: v for k, v in spec.items() if k != "type"}
            try:
                built.append(LAYER_TYPES[spec["type"]](**kwargs))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"layer {i} ({spec['type']}): {exc}") from None
        model = cls.__new__(cls)
        try:
            Sequential._setup(
                model,
                built,
                config.get("input_shape"),
                config.get("dtype", "float32"),
                backend,
                initialize,
            )
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        return model

    def _setup(self, layers, input_shape, dtype, backend, initialize):
        self.layers = list(layers)
        self.input_shape = None if input_shape is None else self._check_shape(input_shape)
        self.dtype = validation.float_dtype(dtype)
        self.training = True
        self._backend = L.default_backend() if backend is None else backends.get(backend)
        _check_backend_dtype(self._backend, self.dtype)
        self.plan = None
        self._compile()
        if initialize:
            self._initialize_all()

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write weights, architecture and fastnn version to a .npz file, atomically."""
        fileformat.write_model(path, self.config(), self.state_dict(), __version__)

    def __repr__(self):
        inner = ",\n".join(f"  ({i}) {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, i):
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)


def host_array(a):
    """`a` as a NumPy array; a CuPy array is copied over explicitly (np.asarray refuses it)."""
    if not isinstance(a, np.ndarray) and type(a).__module__.split(".")[0] == "cupy":
        return a.get()
    return np.asarray(a)


def _check_backend_dtype(backend, dtype):
    """TypeError unless `backend` computes in `dtype` (cuda: float32 only), checked before any
    parameter exists: a model whose dtype says float64 must never hold float32 arrays."""
    if dtype not in backend.dtypes:
        names = ", ".join(np.dtype(d).name for d in backend.dtypes)
        raise TypeError(
            f"backend {backend.name!r} computes in {names}, not {dtype.name}: use "
            f"dtype={names}, or build (or load) the model on 'cpu' and move it "
            f"with .to({backend.name!r}, dtype={names!r})"
        )
