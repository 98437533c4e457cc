"""Sequential: a stack of layers that builds, fuses and runs forward and backward.

Building looks at neighbours: a Linear or Conv2d directly followed by ReLU computes the ReLU
inside its kernel (the ReLU layer stays in `layers` for the architecture and the summary, but
is skipped when running); on a backend with fused conv + max-pool kernels (cpu), a Conv2d also
runs the MaxPool2d (stride == kernel) that follows it or its ReLU, so the convolution's output
never goes to memory. A layer's "auto" initializer becomes He when the next activation is a
ReLU, Glorot otherwise. The first layer with parameters does not compute the gradient of
its input when its backend can skip it.
"""
import math
import sys

import numpy as np

from . import _random, backends, fileformat
from . import extra_layers as XL
from . import layers as L
from ._version import __version__
from .datasets import nonfinite_message, to_float
from .folding import FoldedEval
from .inference import DensePlan

# Layers that only move, select, average or normalize values: they do not decide the
# initializer (a Conv2d -> BatchNorm2d -> ReLU gets He's, as Conv2d -> ReLU does).
_SHAPE_ONLY = (L.Flatten, L.MaxPool2d, L.Dropout, XL._BatchNorm, XL.AvgPool2d,
               XL.GlobalAvgPool2d)
# Every layer type a saved architecture may name.
LAYER_TYPES = {**L.LAYER_TYPES, **XL.EXTRA_LAYER_TYPES}


def _as_dtype(dtype):
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dtype not in L.FLOAT_DTYPES:
        raise TypeError(f"dtype must be float32 or float64, got {dtype.name}")
    return dtype


def _init_for(layers, i):
    """He when the next activation after layer i is ReLU, else Glorot (layer's own init wins)."""
    own = layers[i].init
    if own != "auto":
        return own
    for following in layers[i + 1:]:
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

    def __init__(self, *layers, input_shape=None, dtype=np.float32, backend=None, seed=None):
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
        """Decide fusion and which layers run forward and backward."""
        layers = self.layers
        pool_fuses = self._backend.fuses_conv2d_maxpool
        run = []
        fused = set()
        for i, layer in enumerate(layers):
            if i in fused:
                continue
            if isinstance(layer, (L._Parametric, XL._BatchNorm)):
                layer.relu = i + 1 < len(layers) and type(layers[i + 1]) is L.ReLU
                if layer.relu:
                    fused.add(i + 1)
            if isinstance(layer, L.Conv2d):
                j = i + 1 + layer.relu
                pool = layers[j] if j < len(layers) else None
                if not (pool_fuses and type(pool) is L.MaxPool2d
                        and pool.stride == pool.kernel_size):
                    pool = None
                layer.pool = pool
                if pool is not None:
                    fused.add(j)
            run.append(layer)
        self._fused = fused
        self._run = run
        FoldedEval.release(run)
        # evaluation folds each BatchNorm into the Linear/Conv2d before it (None: nothing to fold)
        self._folded_eval = FoldedEval(run, self._backend, self.dtype, pool_fuses) or None
        first = next((k for k, layer in enumerate(run) if layer.param_names), len(run))
        for k, layer in enumerate(run):
            layer.need_dx = k > first
        # layers before the first parameter need no backward pass at all
        self._run_backward = run[first:][::-1]
        self._input_ok = (None, None)  # (per-sample input shape, as the first layer takes it)
        self._plan = None  # the compiled inference plan, built on first predict (False: none)
        self._slots = [(layer, j, f"{i}.{name}")
                       for i, layer in enumerate(layers)
                       for j, name in enumerate(layer.param_names)]
        for layer in layers:
            layer._backend = self._backend
            layer._bind()

    def _initialize_all(self):
        for i, layer in enumerate(self.layers):
            if isinstance(layer, L._Parametric):
                layer.initialize(_init_for(self.layers, i), self.dtype, self._backend)
            elif layer.param_names or getattr(layer, "buffer_names", ()):
                layer.initialize(dtype=self.dtype, backend=self._backend)

    def reset_parameters(self, seed=None):
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
    def backend(self):
        return self._backend

    def to(self, backend=None, dtype=None):
        """Move the parameters to `backend` ("numpy", "cpu", "cuda") and/or `dtype`; returns self.
        Gradients are dropped; an optimizer re-attaches its state at the next fit."""
        new = self._backend if backend is None else backends.get(backend)
        dtype = self.dtype if dtype is None else _as_dtype(dtype)
        if new is self._backend and dtype == self.dtype:
            return self
        _check_backend_dtype(new, dtype)
        for layer in self.layers:
            layer._backend = self._backend
            layer.to(new, dtype)
        self._backend = new
        self.dtype = dtype
        self._compile()
        return self

    def set_reuse(self, flag):
        """Let training passes write outputs and gradients into arrays kept between steps (the
        Trainer does this during fit). Off (the default) frees them: every forward then returns
        fresh arrays a caller may keep."""
        for layer in self.layers:
            if layer.reuse != bool(flag):
                layer.set_reuse(flag)
        return self

    def train(self, mode=True):
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    # ---- parameters ----------------------------------------------------------------------------

    def named_parameters(self):
        """{"<layer index>.<name>": backend array}, e.g. "1.weight"."""
        return {name: layer.params[j] for layer, j, name in self._slots}

    def parameters(self):
        return [layer.params[j] for layer, j, _ in self._slots]

    def gradients(self):
        """Gradients from the last backward pass, parallel to parameters() (None before one)."""
        return [layer.grads[j] for layer, j, _ in self._slots]

    def param_shapes(self):
        return {f"{i}.{name}": tuple(shape)
                for i, layer in enumerate(self.layers)
                for name, shape in layer.param_shapes().items()}

    def param_count(self):
        return sum(math.prod(s) for s in self.param_shapes().values())

    def _buffer_slots(self):
        """(layer, j, "<layer index>.<name>") of the saved, untrained arrays (BatchNorm's
        running statistics, float64)."""
        return [(layer, j, f"{i}.{name}") for i, layer in enumerate(self.layers)
                for j, name in enumerate(getattr(layer, "buffer_names", ()))]

    def state_dtypes(self):
        """{name: dtype} of state_dict()'s arrays: the model's dtype, float64 for running
        statistics."""
        dtypes = {name: self.dtype for name in self.param_shapes()}
        dtypes.update((name, np.dtype(np.float64)) for _, _, name in self._buffer_slots())
        return dtypes

    def state_dict(self):
        """{name: numpy copy of the parameter}, running statistics included."""
        b = self._backend
        state = {name: np.array(b.to_numpy(layer.params[j]), copy=True)
                 for layer, j, name in self._slots}
        state.update((name, np.array(b.to_numpy(layer.buffers[j]), dtype=np.float64,
                                     copy=True))
                     for layer, j, name in self._buffer_slots())
        return state

    def load_state_dict(self, state):
        """Copy parameters in from {name: array}; names, shapes and dtypes must match exactly."""
        if not isinstance(state, dict):
            raise TypeError(f"state must be a dict, got {type(state).__name__}")
        expected = self.param_shapes()
        missing = sorted(set(expected) - set(state))
        extra = sorted(set(state) - set(expected))
        if missing or extra:
            raise ValueError(f"parameter names do not match the model: missing {missing}, "
                             f"unexpected {extra}")
        arrays = {}
        buffers = {name for _, _, name in self._buffer_slots()}
        for name, shape in expected.items():
            value = np.asarray(state[name]) if isinstance(state[name], np.ndarray) else \
                self._backend.to_numpy(state[name])
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
                layer.set_params([b.asarray(np.array(arrays[f"{i}.{n}"], copy=True))
                                  for n in layer.param_names])
                layer._backend = b
                layer._bind()
            if getattr(layer, "buffer_names", ()):
                layer.set_buffers([b.asarray(np.array(arrays[f"{i}.{n}"], copy=True))
                                   for n in layer.buffer_names])
                layer._backend = b
        return self

    # ---- shapes ----------------------------------------------------------------------------------

    def output_shape(self, input_shape):
        """Per-sample output shape for a per-sample input shape; ValueError naming the layer
        that does not fit."""
        shape = self._sample_shape(tuple(input_shape))
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as exc:
                raise ValueError(f"input of shape {tuple(input_shape)} does not fit the model "
                                 f"at layer {i}: {exc}") from None
        return shape

    def _first_compute_layer(self):
        return next((layer for layer in self.layers
                     if not isinstance(layer, (L.Flatten, L.Dropout))), None)

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
        raise ValueError("the input shape is unknown: pass input_shape=(C, H, W) to summary() "
                         "or to Sequential")

    # ---- running ---------------------------------------------------------------------------------

    def forward(self, x, training=None):
        """Outputs for a batch `x` (a backend array of the model's dtype, shape (N, ...)).
        In training mode the layers keep what backward needs."""
        if training is None:
            training = self.training
        run = self._run
        if not training and self._folded_eval is not None:
            run = self._folded_eval.run()
        for layer in run:
            x = layer.forward(x, training)
        return x

    __call__ = forward

    def backward(self, doutput):
        """Gradients of the loss for the last training forward pass, into each layer's grads."""
        dy = doutput
        for layer in self._run_backward:
            dy = layer.backward(dy)

    def prepare_input(self, x, name="x"):
        """`x` (uint8 images scaled to [0, 1], or floats) as a checked backend array of the
        model's dtype and per-sample shape, e.g. (N, 28, 28) -> (N, 1, 28, 28) for a CNN.
        A device array of the model's backend (CuPy on cuda) is converted where it is."""
        xp = self._backend.xp
        on_device = isinstance(x, xp.ndarray) and not isinstance(x, np.ndarray)
        if not on_device:
            x = host_array(x)
        if x.ndim < 2:
            raise ValueError(f"x must have a sample axis and at least one more, got shape "
                             f"{x.shape}{self._one_sample_hint(x.shape)}")
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
        else:
            x = to_float(x, name) if self.dtype == np.float32 else _to_float64(x, name)
        return self._backend.asarray(x.reshape((x.shape[0], *sample)))

    def _one_sample_hint(self, shape):
        """When `shape` would fit as one sample, say how to make it a batch of one."""
        try:
            self.output_shape(self._sample_shape(tuple(shape)))
        except (ValueError, TypeError):
            return ""
        return (f"; x looks like one sample of shape {tuple(shape)}: add a batch axis, "
                f"e.g. x[None] or x.reshape(1, {', '.join(map(str, shape))})")

    def _outputs(self, x, batch_size):
        batch_size = L._int_arg("batch_size", batch_size, 1)
        x = self.prepare_input(x)
        n = x.shape[0]
        if n <= batch_size:
            return self.forward(x, False)
        parts = [self.forward(x[i:i + batch_size], False) for i in range(0, n, batch_size)]
        return self._backend.xp.concatenate(parts)

    def _dense_plan(self):
        """The compiled inference plan of an MLP on cpu (fastnn.inference), or None."""
        plan = self._plan
        if plan is None or (plan and not plan.current(self)):
            plan = self._plan = DensePlan.build(self) or False
        return plan or None

    def _plan_input(self, x):
        """x as the plan takes it: 2-D, C-contiguous, the model's dtype (finiteness is checked
        by the plan's kernel); None when it needs the general path's checks and conversion."""
        if type(x) is not np.ndarray or x.dtype != self.dtype or x.ndim < 2 or \
                not (x.flags.c_contiguous and x.flags.aligned):
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
            return np.concatenate([run(xs[i:i + batch_size]) for i in range(0, xs.shape[0],
                                                                             batch_size)])
        except ValueError:
            if not np.isfinite(xs).all():  # the kernel's message cannot say where
                raise ValueError(nonfinite_message(x)) from None
            raise

    def predict(self, x, batch_size=1024):
        """Predicted class indices (numpy int64) for uint8 images or float inputs."""
        batch_size = L._int_arg("batch_size", batch_size, 1)
        labels = self._plan_predict(x, batch_size, outputs=False)
        if labels is not None:
            return labels
        out = self._outputs(x, batch_size)
        return np.asarray(self._backend.to_numpy(out.argmax(axis=1)), dtype=np.int64)

    def predict_proba(self, x, batch_size=1024):
        """Softmax of the outputs (numpy, rows sum to 1)."""
        batch_size = L._int_arg("batch_size", batch_size, 1)
        out = self._plan_predict(x, batch_size, outputs=True)
        if out is None:
            out = self._outputs(x, batch_size)
        xp = self._backend.xp
        e = xp.exp(out - out.max(axis=1, keepdims=True))
        e /= e.sum(axis=1, keepdims=True)
        return self._backend.to_numpy(e)

    # ---- description -----------------------------------------------------------------------------

    def describe(self, input_shape=None):
        """One dict per layer: index, layer, output_shape, params, flops, fused."""
        shape = self._sample_shape(self._guess_input_shape() if input_shape is None
                                   else self._check_shape(input_shape))
        self.output_shape(shape)  # raises with the layer that does not fit
        rows = []
        for i, layer in enumerate(self.layers):
            flops = layer.flops(shape)
            shape = layer.output_shape(shape)
            rows.append({"index": i, "layer": repr(layer), "output_shape": shape,
                         "params": sum(math.prod(s) for s in layer.param_shapes().values()),
                         "flops": flops, "fused": i in self._fused})
        return rows

    def summary(self, input_shape=None, file=None):
        """Print a table: each layer's output shape, parameters and forward FLOPs per sample."""
        rows = self.describe(input_shape)
        table = [("#", "layer", "output shape", "params", "FLOPs")]
        for r in rows:
            name = r["layer"] + ("  (fused into previous)" if r["fused"] else "")
            table.append((str(r["index"]), name, str(r["output_shape"]), f"{r['params']:,}",
                          f"{r['flops']:,}"))
        widths = [max(len(row[c]) for row in table) for c in range(5)]
        lines = []
        for k, row in enumerate(table):
            lines.append("  ".join(cell.ljust(w) if c < 3 else cell.rjust(w)
                                   for c, (cell, w) in enumerate(zip(row, widths))).rstrip())
            if k == 0:
                lines.append("-" * len(lines[0]))
        total_params = sum(r["params"] for r in rows)
        total_flops = sum(r["flops"] for r in rows)
        lines.append("-" * len(lines[0]))
        lines.append(f"parameters: {total_params:,} ({self.dtype.name}, "
                     f"{total_params * self.dtype.itemsize / 1e6:.2f} MB)   "
                     f"forward FLOPs per sample: {total_flops:,}   backend: {self._backend.name}")
        print("\n".join(lines), file=sys.stdout if file is None else file)

    def config(self):
        """The architecture as JSON-friendly data (saved with the weights)."""
        return {"layers": [{"type": type(layer).__name__, **layer.config()}
                           for layer in self.layers],
                "input_shape": None if self.input_shape is None else list(self.input_shape),
                "dtype": self.dtype.name}

    @classmethod
    def from_config(cls, config, backend=None, initialize=True):
        """Rebuild from config(); with initialize=False parameters are left to load_state_dict."""
        if not isinstance(config, dict) or not isinstance(config.get("layers"), list):
            raise ValueError("architecture must be a dict with a 'layers' list")
        built = []
        for i, spec in enumerate(config["layers"]):
            if not isinstance(spec, dict) or not isinstance(spec.get("type"), str) or \
                    spec["type"] not in LAYER_TYPES:
                raise ValueError(f"layer {i}: unknown layer description {spec!r}")
            kwargs = {k: v for k, v in spec.items() if k != "type"}
            try:
                built.append(LAYER_TYPES[spec["type"]](**kwargs))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"layer {i} ({spec['type']}): {exc}") from None
        model = cls.__new__(cls)
        try:
            Sequential._setup(model, built, config.get("input_shape"),
                              config.get("dtype", "float32"), backend, initialize)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        return model

    def _setup(self, layers, input_shape, dtype, backend, initialize):
        self.layers = list(layers)
        self.input_shape = None if input_shape is None else self._check_shape(input_shape)
        self.dtype = _as_dtype(dtype)
        self.training = True
        self._backend = L.default_backend() if backend is None else backends.get(backend)
        _check_backend_dtype(self._backend, self.dtype)
        self._compile()
        if initialize:
            self._initialize_all()

    def save(self, path):
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
        raise TypeError(f"backend {backend.name!r} computes in {names}, not {dtype.name}: use "
                        f"dtype={names}, or build (or load) the model on 'cpu' and move it "
                        f"with .to({backend.name!r}, dtype={names!r})")


def _to_float64(x, name="x"):
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x.astype(np.float64) / 255.0
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be uint8 images or floating point, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise ValueError(nonfinite_message(x, name))
    return x
