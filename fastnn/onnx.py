"""ONNX export and import: serve a fastnn model from ONNX Runtime, or bring in weights from a
graph another framework exported (e.g. `torch.onnx.export` of an equivalent `nn.Sequential`).

Needs the `onnx` package (`pip install onnx`); onnxruntime is only needed to run the
exported file.

An exported graph takes float32 input of the model's per-sample shape with a dynamic batch
axis (input "input", shape (N, 28, 28) for the MNIST examples), so images go in as
`uint8_images.astype(np.float32) / 255`, the scaling fastnn applies to uint8 input itself. It
has two outputs: "logits" (N, classes) and "probabilities" (their softmax, what
`model.predict_proba` returns).

Both directions go through one registry per direction, so a new layer plugs in with two small
functions: `register_exporter("LayerName")` for a function that writes the layer's nodes, and
`register_importer("OpType")` for a function that turns one ONNX node into fastnn layers.

Loading trusts nothing in the file: it reads only the tensors it needs, checks every declared
size against the bytes present before building an array, and reads external data (torch's
default for its exporter) only from files beside the model, so a truncated, mistyped or
hostile file raises ValueError (naming the node where there is one), never a crash, a read
outside the model's directory or an allocation the file's size does not pay for.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import layers as L
from ._version import __version__
from .fileformat import atomic_write
from .model import Sequential

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTERS",
    "IMPORTERS",
    "MAX_OPSET",
    "MIN_OPSET",
    "export",
    "load",
    "register_exporter",
    "register_importer",
]

# Opset 17 (IR version 8) is loaded by every ONNX Runtime from 1.12 on, ONNX Runtime Web
# included; the file is stamped with the lowest IR version its opset needs, not the newest
# one the installed `onnx` knows (which older runtimes refuse).
DEFAULT_OPSET = 17
MIN_OPSET = 13  # Softmax over one axis, Reshape with allowzero, Dropout's ratio as an input
MAX_OPSET = 21

INPUT_NAME = "input"
LOGITS_NAME = "logits"
PROBABILITIES_NAME = "probabilities"

# Loading limits: a graph beyond them is refused before any large array is built.
MAX_FILE_BYTES = 1 << 31
MAX_TENSOR_ELEMENTS = 1 << 28  # 1 GiB of float32 in one initializer
MAX_DIM = 1 << 24
MAX_NODES = 10_000

_FLOAT, _INT64, _DOUBLE, _INT32 = 1, 7, 11, 6
_TENSOR_DTYPES = {_FLOAT: np.float32, _DOUBLE: np.float64, _INT64: np.int64, _INT32: np.int32}
_TYPED_FIELDS = {
    _FLOAT: "float_data",
    _DOUBLE: "double_data",
    _INT64: "int64_data",
    _INT32: "int32_data",
}


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError(
            "fastnn.onnx needs the onnx package: pip install onnx (in a fastnn checkout: "
            'pip install ".[onnx]")'
        ) from None
    return onnx


# ==== export ========================================================================================


class GraphBuilder:
    """Collects the nodes and initializers of the graph being exported; names are unique."""

    def __init__(self):
        onnx = _require_onnx()
        self.helper = onnx.helper
        self.numpy_helper = onnx.numpy_helper
        self.nodes = []
        self.initializers = []
        self._names = set()

    def name(self, hint: str) -> str:
        candidate, k = hint, 1
        while candidate in self._names:
            candidate, k = f"{hint}_{k}", k + 1
        self._names.add(candidate)
        return candidate

    def constant(self, hint: str, array) -> str:
        """Add `array` as an initializer; returns its name."""
        name = self.name(hint)
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op_type: str, inputs: Sequence[str], hint: str, **attributes) -> str:
        """Add one node with one output; returns the output's name."""
        out = self.name(hint)
        self.nodes.append(
            self.helper.make_node(
                op_type, list(inputs), [out], name=self.name(f"{hint}_{op_type}"), **attributes
            )
        )
        return out


@dataclass
class ExportStep:
    """What an exporter gets for one layer: the layer, its parameters as float32 numpy arrays
    (by name: "weight", "bias", ...), its index, and the per-sample input shape."""

    layer: L.Layer
    params: dict[str, np.ndarray]
    index: int
    input_shape: tuple[int, ...]

    @property
    def prefix(self) -> str:
        return f"{self.index}_{type(self.layer).__name__.lower()}"


Exporter = Callable[[ExportStep, GraphBuilder, str], str]
EXPORTERS: dict[str, Exporter] = {}


def register_exporter(layer_type: str):
    """Decorator: `fn(step, graph, x) -> output name` writes the nodes of layers of this type
    (by class name, as in the saved architecture)."""

    def decorate(fn: Exporter) -> Exporter:
        EXPORTERS[layer_type] = fn
        return fn

    return decorate


@register_exporter("Linear")
def _export_linear(step, g, x):
    w = g.constant(f"{step.index}.weight", step.params["weight"])
    b = g.constant(f"{step.index}.bias", step.params["bias"])
    return g.node("Gemm", [x, w, b], step.prefix, transB=1)


@register_exporter("Conv2d")
def _export_conv2d(step, g, x):
    layer = step.layer
    w = g.constant(f"{step.index}.weight", step.params["weight"])
    b = g.constant(f"{step.index}.bias", step.params["bias"])
    p, s = layer.padding, layer.stride
    return g.node(
        "Conv",
        [x, w, b],
        step.prefix,
        kernel_shape=list(layer.kernel_size),
        strides=[s, s],
        pads=[p, p, p, p],
        dilations=[1, 1],
        group=1,
    )


@register_exporter("MaxPool2d")
def _export_maxpool2d(step, g, x):
    k, s = step.layer.kernel_size, step.layer.stride
    return g.node(
        "MaxPool", [x], step.prefix, kernel_shape=[k, k], strides=[s, s], pads=[0, 0, 0, 0]
    )


@register_exporter("Flatten")
def _export_flatten(step, g, x):
    return g.node("Flatten", [x], step.prefix, axis=1)


def _elementwise(op_type):
    def export(step, g, x):
        return g.node(op_type, [x], step.prefix)

    return export


for _layer, _op in (("ReLU", "Relu"), ("Sigmoid", "Sigmoid"), ("Tanh", "Tanh")):
    register_exporter(_layer)(_elementwise(_op))


@register_exporter("Dropout")
def _export_dropout(step, g, x):
    return x  # the identity at inference


@register_exporter("LeakyReLU")
def _export_leaky_relu(step, g, x):
    slope = _first_attr(step.layer, ("negative_slope", "alpha", "slope"))
    return g.node("LeakyRelu", [x], step.prefix, alpha=float(slope))


@register_exporter("AvgPool2d")
def _export_avgpool2d(step, g, x):
    layer = step.layer
    k = layer.kernel_size
    k = list(k) if isinstance(k, (tuple, list)) else [k, k]
    s = getattr(layer, "stride", None) or k
    s = list(s) if isinstance(s, (tuple, list)) else [s, s]
    p = getattr(layer, "padding", 0) or 0
    return g.node(
        "AveragePool",
        [x],
        step.prefix,
        kernel_shape=k,
        strides=s,
        pads=[p, p, p, p],
        count_include_pad=1,
    )


@register_exporter("GlobalAvgPool2d")
def _export_global_avgpool2d(step, g, x):
    pooled = g.node("GlobalAveragePool", [x], step.prefix)
    out_shape = step.layer.output_shape(step.input_shape)
    if len(out_shape) == 3:  # the layer keeps (C, 1, 1)
        return pooled
    return g.node("Flatten", [pooled], f"{step.prefix}_flat", axis=1)


def _batchnorm_stats(step):
    """scale, bias, running mean, running variance and epsilon of a BatchNorm layer."""
    layer, p = step.layer, step.params
    channels = p["running_mean"].shape[0] if "running_mean" in p else layer.num_features
    scale = p.get("weight", np.ones(channels, np.float32))
    bias = p.get("bias", np.zeros(channels, np.float32))
    mean = p["running_mean"] if "running_mean" in p else _host(layer.running_mean)
    var = p["running_var"] if "running_var" in p else _host(layer.running_var)
    eps = float(_first_attr(layer, ("eps", "epsilon")))
    return [np.asarray(a, np.float32) for a in (scale, bias, mean, var)], eps


def _export_batchnorm(step, g, x):
    arrays, eps = _batchnorm_stats(step)
    names = [
        g.constant(f"{step.index}.{n}", a)
        for n, a in zip(("weight", "bias", "running_mean", "running_var"), arrays)
    ]
    return g.node("BatchNormalization", [x, *names], step.prefix, epsilon=eps)


register_exporter("BatchNorm1d")(_export_batchnorm)
register_exporter("BatchNorm2d")(_export_batchnorm)


def _first_attr(obj, names):
    for name in names:
        if hasattr(obj, name):
            return getattr(obj, name)
    raise AttributeError(f"{type(obj).__name__} has none of {names}")


def _host(a):
    return a.get() if hasattr(a, "get") and not isinstance(a, np.ndarray) else np.asarray(a)


def _model_input_shape(model, input_shape):
    if input_shape is not None:
        return Sequential._check_shape(input_shape)
    try:
        return tuple(model._guess_input_shape())
    except ValueError:
        raise ValueError(
            "the model's input shape is unknown (it has not been fit): pass "
            "input_shape=, e.g. (28, 28)"
        ) from None


def _layer_params(model):
    """{layer index: {param name: float32 numpy array}}, from the model's state dict."""
    per_layer: dict[int, dict[str, np.ndarray]] = {}
    for key, value in model.state_dict().items():
        index, name = key.split(".", 1)
        per_layer.setdefault(int(index), {})[name] = np.ascontiguousarray(value, np.float32)
    return per_layer


def _check_opset(opset):
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"opset must be an int, got {type(opset).__name__}")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in [{MIN_OPSET}, {MAX_OPSET}], got {opset}")
    return opset


def to_model_proto(
    model: Sequential, *, opset: int = DEFAULT_OPSET, input_shape: Sequence[int] | None = None
):
    """The ONNX ModelProto `export` writes (checked with the full ONNX checker)."""
    onnx = _require_onnx()
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastnn Sequential, got {type(model).__name__}")
    opset = _check_opset(opset)
    shape = _model_input_shape(model, input_shape)
    out_shape = model.output_shape(shape)  # ValueError naming the layer that does not fit
    if len(out_shape) != 1:
        raise ValueError(
            f"the model's output has shape {out_shape} per sample; export needs one score per class"
        )
    g = GraphBuilder()
    g.name(INPUT_NAME)
    x = INPUT_NAME
    sample = model._sample_shape(shape)
    if sample != shape:  # fastnn adds the channel axis of (N, H, W) images itself
        target = g.constant("input_shape", np.array([-1, *sample], np.int64))
        x = g.node("Reshape", [x, target], "input_nchw")
    params = _layer_params(model)
    for i, layer in enumerate(model.layers):
        kind = type(layer).__name__
        exporter = EXPORTERS.get(kind)
        if exporter is None:
            raise ValueError(
                f"layer {i} ({layer!r}): no ONNX exporter for {kind} (known: "
                f"{', '.join(sorted(EXPORTERS))})"
            )
        x = exporter(ExportStep(layer, params.get(i, {}), i, sample), g, x)
        sample = layer.output_shape(sample)
    helper = onnx.helper
    if x == INPUT_NAME or x in {t.name for t in g.initializers}:
        x = g.node("Identity", [x], "features")
    g.nodes.append(helper.make_node("Identity", [x], [LOGITS_NAME], name="logits_Identity"))
    g.nodes.append(
        helper.make_node(
            "Softmax", [LOGITS_NAME], [PROBABILITIES_NAME], axis=1, name="probabilities_Softmax"
        )
    )
    classes = out_shape[0]
    graph = helper.make_graph(
        g.nodes,
        "fastnn",
        [helper.make_tensor_value_info(INPUT_NAME, onnx.TensorProto.FLOAT, ["N", *shape])],
        [
            helper.make_tensor_value_info(LOGITS_NAME, onnx.TensorProto.FLOAT, ["N", classes]),
            helper.make_tensor_value_info(
                PROBABILITIES_NAME, onnx.TensorProto.FLOAT, ["N", classes]
            ),
        ],
        initializer=g.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    proto = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="fastnn",
        ir_version=helper.find_min_ir_version_for(opsets),
    )

    proto.producer_version = __version__
    proto.doc_string = (
        "input: float32 (N, *input_shape), uint8 images divided by 255; "
        "outputs: logits, softmax probabilities"
    )
    onnx.checker.check_model(proto, full_check=True)
    return proto


def export(
    model: Sequential, path, *, opset: int = DEFAULT_OPSET, input_shape: Sequence[int] | None = None
) -> None:
    """Write `model` as an ONNX file at `path` (atomically): float32 input "input" of shape
    (N, *input_shape) -- the model's own input shape unless given -- and outputs "logits" and
    "probabilities". Dropout is left out (the identity at inference); BatchNorm uses its
    running statistics."""

    proto = to_model_proto(model, opset=opset, input_shape=input_shape)
    data = proto.SerializeToString()
    atomic_write(path, lambda f: f.write(data))


# ==== import ========================================================================================


@dataclass
class ImportedLayer:
    """One fastnn layer an importer made, with its parameters (float32 numpy, by name)."""

    layer: L.Layer
    params: dict[str, np.ndarray] = field(default_factory=dict)


class Graph:
    """The part of a loaded ONNX graph importers see: constants (initializers and Constant
    nodes, converted on demand with every size checked) and each node's attributes."""

    def __init__(self, proto, base_dir=None):
        self.proto = proto
        self.base_dir = base_dir
        graph = proto.graph
        self._initializers = {}
        for t in graph.initializer:
            if t.name in self._initializers:
                raise ValueError(f"initializer {t.name!r} is defined twice")
            self._initializers[t.name] = t
        self._constants: dict[str, np.ndarray] = {}
        self._constant_nodes = {}
        for node in graph.node:
            if node.op_type == "Constant" and len(node.output) == 1:
                self._constant_nodes[node.output[0]] = node

    def is_constant(self, name: str) -> bool:
        return name in self._initializers or name in self._constant_nodes

    def constant(self, name: str, what: str = "value") -> np.ndarray:
        """The numpy value of a constant input, or ValueError."""
        if name in self._constants:
            return self._constants[name]
        if name in self._initializers:
            value = tensor_to_array(self._initializers[name], name, self.base_dir)
        elif name in self._constant_nodes:
            node = self._constant_nodes[name]
            attrs = {a.name: a for a in node.attribute}
            if set(attrs) - {"value"} or "value" not in attrs:
                raise ValueError(
                    f"node {_node_label(node)}: only Constant nodes with a tensor "
                    f"'value' are supported, got {sorted(attrs)}"
                )
            value = tensor_to_array(attrs["value"].t, name, self.base_dir)
        else:
            raise ValueError(
                f"{what} {name!r} must be a constant (an initializer), but it is "
                f"computed in the graph"
            )
        self._constants[name] = value
        return value


Importer = Callable[["NodeView", Graph], list[ImportedLayer]]
IMPORTERS: dict[str, Importer] = {}


def register_importer(op_type: str):
    """Decorator: `fn(node, graph) -> [ImportedLayer, ...]` turns one ONNX node of this op
    type into fastnn layers (an empty list drops the node)."""

    def decorate(fn: Importer) -> Importer:
        IMPORTERS[op_type] = fn
        return fn

    return decorate


class NodeView:
    """An ONNX node with checked attribute access; errors name the node."""

    def __init__(self, node, input_shape, flat=None):
        self.node = node
        # whether the data is (batch, features) here; None where not known
        self.flat = flat if input_shape is None else len(input_shape) == 1
        self.op_type = node.op_type
        self.inputs = list(node.input)
        self.input_shape = input_shape  # per sample, None where unknown
        self._attrs = {}
        for a in node.attribute:
            self._attrs[a.name] = a
        self._used = set()

    @property
    def label(self):
        return _node_label(self.node)

    def error(self, message):
        return ValueError(f"node {self.label}: {message}")

    def attr(self, name, default=None):
        """The attribute's value (int, float, str or list of ints/floats), or `default`."""
        self._used.add(name)
        a = self._attrs.get(name)
        if a is None:
            return default
        kind = a.type
        if kind == 1:
            return float(a.f)
        if kind == 2:
            return int(a.i)
        if kind == 3:
            return a.s.decode("utf-8", "replace")
        if kind == 6:
            return [float(v) for v in a.floats]
        if kind == 7:
            if len(a.ints) > 16:
                raise self.error(f"attribute {name} has {len(a.ints)} values")
            return [int(v) for v in a.ints]
        raise self.error(f"attribute {name} has an unsupported type ({kind})")

    def ints(self, name, count, default):
        values = self.attr(name, default)
        if not isinstance(values, list) or len(values) != count:
            raise self.error(f"attribute {name} must be {count} ints, got {values!r}")
        return values

    def check_attributes(self):
        """Refuse attributes the importer did not read (it would ignore their meaning)."""
        unknown = sorted(set(self._attrs) - self._used)
        if unknown:
            raise self.error(f"unsupported attribute(s) {unknown}")

    def require(self, condition, message):
        if not condition:
            raise self.error(message)


def _node_label(node):
    return f"{node.name!r} ({node.op_type})" if node.name else f"({node.op_type})"


def tensor_to_array(tensor, name, base_dir=None) -> np.ndarray:
    """A TensorProto as a numpy array, checking its type and declared size against the data
    present before building anything. External data (as torch.onnx.export writes by default)
    is read from a file inside `base_dir`, the model file's directory, and nowhere else."""
    dims = list(tensor.dims)
    if len(dims) > 8 or any(d < 0 or d > MAX_DIM for d in dims):
        raise ValueError(f"tensor {name!r} declares an invalid shape {dims}")
    count = math.prod(dims)
    if count > MAX_TENSOR_ELEMENTS:
        raise ValueError(
            f"tensor {name!r} declares {count} elements, more than the "
            f"{MAX_TENSOR_ELEMENTS} allowed"
        )
    dtype = _TENSOR_DTYPES.get(tensor.data_type)
    if dtype is None:
        raise ValueError(
            f"tensor {name!r} has element type {tensor.data_type}; float32, "
            f"float64, int32 and int64 tensors are supported"
        )
    dtype = np.dtype(dtype).newbyteorder("<")
    if tensor.data_location == 1 or len(tensor.external_data):
        raw = _read_external(tensor, name, count * dtype.itemsize, base_dir)
        flat = np.frombuffer(raw, dtype=dtype)
    elif tensor.HasField("raw_data"):
        raw = tensor.raw_data
        if len(raw) != count * dtype.itemsize:
            raise ValueError(
                f"tensor {name!r} declares shape {dims} ({count} elements) but "
                f"holds {len(raw)} bytes"
            )
        flat = np.frombuffer(raw, dtype=dtype)
    else:
        values = getattr(tensor, _TYPED_FIELDS[tensor.data_type])
        if len(values) != count:
            raise ValueError(
                f"tensor {name!r} declares shape {dims} ({count} elements) but "
                f"holds {len(values)} values"
            )
        flat = np.fromiter(values, dtype=dtype, count=count)
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def _read_external(tensor, name, nbytes, base_dir):
    """`nbytes` of a tensor's external data: from a regular file inside `base_dir` (no absolute
    paths, no way out through '..' or links), at an offset the file is long enough for."""
    if base_dir is None:
        raise ValueError(
            f"tensor {name!r} keeps its data in an external file, which needs the "
            f"model loaded from its path (not from bytes)"
        )
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries.get("length", str(nbytes)))
    except ValueError:
        raise ValueError(f"tensor {name!r}: invalid external data offset/length") from None
    if length != nbytes or offset < 0:
        raise ValueError(
            f"tensor {name!r} needs {nbytes} bytes of external data, the file "
            f"declares {length} at offset {offset}"
        )
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, location))
    if (
        not location
        or "\0" in location
        or os.path.isabs(location)
        or os.path.commonpath([root, path]) != root
        or not os.path.isfile(path)
    ):
        raise ValueError(
            f"tensor {name!r}: external data location {location!r} is not a file beside the model"
        )
    size = os.path.getsize(path)
    if offset + nbytes > size:
        raise ValueError(
            f"tensor {name!r} needs bytes {offset}..{offset + nbytes} of "
            f"{location!r}, which has {size}"
        )
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.read(nbytes)
    if len(raw) != nbytes:
        raise ValueError(f"tensor {name!r}: {location!r} ended early")
    return raw


def _float_param(node, graph, index, what, shape=None):
    """Input `index` of `node` as a finite float32 constant (of `shape` when given)."""
    if index >= len(node.inputs) or not node.inputs[index]:
        return None
    value = graph.constant(node.inputs[index], f"node {node.label}: {what}")
    if value.dtype.kind != "f":
        raise node.error(f"{what} must be floating point, got {value.dtype}")
    if shape is not None and tuple(value.shape) != tuple(shape):
        raise node.error(f"{what} must have shape {tuple(shape)}, got {value.shape}")
    if not np.isfinite(value).all():
        raise node.error(f"{what} holds NaN or infinite values")
    return np.ascontiguousarray(value, np.float32)


@register_importer("Gemm")
def _import_gemm(node, graph):
    node.require(node.attr("transA", 0) == 0, "transA=1 is not supported")
    trans_b = node.attr("transB", 0)
    alpha, beta = node.attr("alpha", 1.0), node.attr("beta", 1.0)
    node.require(len(node.inputs) in (2, 3), "Gemm needs inputs A, B and optionally C")
    w = _float_param(node, graph, 1, "B (the weight)")
    node.require(w.ndim == 2, f"B must be 2-D, got shape {w.shape}")
    w = w if trans_b else w.T
    out_features, in_features = w.shape
    b = _float_param(node, graph, 2, "C (the bias)")
    if b is None:
        b = np.zeros(out_features, np.float32)
    elif b.shape in ((out_features,), (1, out_features)) or b.size == 1:
        b = np.broadcast_to(b.reshape(-1), (out_features,))
    else:
        raise node.error(f"C must broadcast to ({out_features},), got shape {b.shape}")
    return [
        ImportedLayer(
            L.Linear(in_features, out_features),
            {
                "weight": np.ascontiguousarray(w * np.float32(alpha)),
                "bias": np.ascontiguousarray(b * np.float32(beta)),
            },
        )
    ]


@register_importer("MatMul")
def _import_matmul(node, graph):
    """x @ W with W (in, out): a Linear without bias (an Add that follows supplies one)."""
    w = _float_param(node, graph, 1, "B (the weight)")
    node.require(w.ndim == 2, f"B must be 2-D, got shape {w.shape}")
    return [
        ImportedLayer(
            L.Linear(w.shape[0], w.shape[1]),
            {"weight": np.ascontiguousarray(w.T), "bias": np.zeros(w.shape[1], np.float32)},
        )
    ]


@register_importer("Conv")
def _import_conv(node, graph):
    w = _float_param(node, graph, 1, "W (the weight)")
    node.require(w.ndim == 4, f"W must be 4-D (out, in, kH, kW), got shape {w.shape}")
    out_ch, in_ch, kh, kw = w.shape
    node.require(node.attr("group", 1) == 1, "group != 1 is not supported")
    node.require(
        node.attr("auto_pad", "NOTSET") == "NOTSET",
        "auto_pad is not supported (give explicit pads)",
    )
    kernel = node.ints("kernel_shape", 2, [kh, kw])
    node.require(kernel == [kh, kw], f"kernel_shape {kernel} does not match W {w.shape}")
    node.require(node.ints("dilations", 2, [1, 1]) == [1, 1], "dilations != 1 are not supported")
    strides = node.ints("strides", 2, [1, 1])
    node.require(strides[0] == strides[1], f"unequal strides {strides} are not supported")
    pads = node.ints("pads", 4, [0, 0, 0, 0])
    node.require(len(set(pads)) == 1, f"unequal pads {pads} are not supported")
    b = _float_param(node, graph, 2, "B (the bias)", (out_ch,))
    if b is None:
        b = np.zeros(out_ch, np.float32)
    layer = L.Conv2d(in_ch, out_ch, (kh, kw), stride=strides[0], padding=pads[0])
    return [ImportedLayer(layer, {"weight": w, "bias": b})]


def _pool_window(node):
    """(kernel, stride) of a square, unpadded pooling node."""
    kernel = node.ints("kernel_shape", 2, None)
    node.require(kernel[0] == kernel[1], f"non-square kernel_shape {kernel} is not supported")
    strides = node.ints("strides", 2, [1, 1])
    node.require(strides[0] == strides[1], f"unequal strides {strides} are not supported")
    node.require(node.ints("pads", 4, [0, 0, 0, 0]) == [0, 0, 0, 0], "padding is not supported")
    node.require(node.attr("ceil_mode", 0) == 0, "ceil_mode=1 is not supported")
    node.require(
        node.attr("auto_pad", "NOTSET") in ("NOTSET", "VALID"), "auto_pad SAME_* is not supported"
    )
    node.require(node.ints("dilations", 2, [1, 1]) == [1, 1], "dilations != 1 are not supported")
    return kernel[0], strides[0]


@register_importer("MaxPool")
def _import_maxpool(node, graph):
    node.require(node.attr("storage_order", 0) == 0, "storage_order=1 is not supported")
    node.require(
        len(node.node.output) == 1 or not node.node.output[1], "the Indices output is not supported"
    )
    kernel, stride = _pool_window(node)
    return [ImportedLayer(L.MaxPool2d(kernel, stride))]


@register_importer("AveragePool")
def _import_avgpool(node, graph):
    kernel, stride = _pool_window(node)
    node.attr("count_include_pad")  # no padding: both settings compute the same
    cls = _layer_class("AvgPool2d", node)
    return [ImportedLayer(cls(kernel, stride))]


@register_importer("GlobalAveragePool")
def _import_global_avgpool(node, graph):
    return [ImportedLayer(_layer_class("GlobalAvgPool2d", node)())]


def _layer_types():
    """Every layer type a saved architecture may name (the model module's registry, which
    adds the layers outside fastnn.layers)."""
    from . import model

    return getattr(model, "LAYER_TYPES", L.LAYER_TYPES)


def _layer_class(name, node):
    cls = _layer_types().get(name)
    if cls is None:
        raise node.error(f"this version of fastnn has no {name} layer")
    return cls


@register_importer("Flatten")
def _import_flatten(node, graph):
    node.require(node.attr("axis", 1) == 1, "only axis=1 (keep the batch axis) is supported")
    if node.flat:  # already (batch, features), e.g. after GlobalAvgPool2d: nothing to do
        return []
    return [ImportedLayer(L.Flatten())]


@register_importer("Reshape")
def _import_reshape(node, graph):
    """A reshape that keeps the batch axis and flattens the rest: Flatten."""
    node.require(len(node.inputs) == 2, "Reshape needs a data and a shape input")
    target = graph.constant(node.inputs[1], f"node {node.label}: the target shape")
    node.require(
        target.dtype.kind == "i" and target.ndim == 1,
        f"the target shape must be a 1-D int64 tensor, got {target.dtype} {target.shape}",
    )
    allowzero = node.attr("allowzero", 0)
    target = [int(v) for v in target]
    known = node.input_shape
    features = None if known is None else math.prod(known)
    flat = (
        len(target) == 2
        and target[0] in (-1, 0)
        and (target[1] == -1 or features is None or target[1] == features)
        and not (allowzero and 0 in target)
        and target != [-1, -1]
    )
    if not flat:
        raise node.error(
            f"only reshapes to (batch, features) are supported, got target "
            f"{target} for per-sample input {known}"
        )
    if node.flat:
        return []
    return [ImportedLayer(L.Flatten())]


def _import_identity(node, graph):
    return []


register_importer("Identity")(_import_identity)


@register_importer("Dropout")
def _import_dropout(node, graph):
    """Inference graphs: the identity (torch exports eval-mode Dropout this way or not at all)."""
    node.attr("seed")
    if len(node.inputs) > 2 and node.inputs[2]:
        mode = graph.constant(node.inputs[2], f"node {node.label}: training_mode")
        node.require(not bool(np.asarray(mode).any()), "training_mode=True is not supported")
    return []


def _activation(cls_name):
    def import_activation(node, graph):
        return [ImportedLayer(L.LAYER_TYPES[cls_name]())]

    return import_activation


for _op, _layer in (("Relu", "ReLU"), ("Sigmoid", "Sigmoid"), ("Tanh", "Tanh")):
    register_importer(_op)(_activation(_layer))


@register_importer("LeakyRelu")
def _import_leaky_relu(node, graph):
    cls = _layer_class("LeakyReLU", node)
    return [ImportedLayer(cls(node.attr("alpha", 0.01)))]


@register_importer("BatchNormalization")
def _import_batchnorm(node, graph):
    node.require(node.attr("training_mode", 0) == 0, "training_mode=1 is not supported")
    node.require(
        len(node.node.output) == 1 or not any(node.node.output[1:]),
        "the running statistics outputs (training mode) are not supported",
    )
    node.attr("momentum")  # only used in training mode
    eps = node.attr("epsilon", 1e-5)
    scale = _float_param(node, graph, 1, "scale")
    node.require(scale is not None and scale.ndim == 1, "scale must be a 1-D constant")
    c = scale.shape[0]
    arrays = {
        "weight": scale,
        "bias": _float_param(node, graph, 2, "B (the bias)", (c,)),
        "running_mean": _float_param(node, graph, 3, "input_mean", (c,)),
        "running_var": _float_param(node, graph, 4, "input_var", (c,)),
    }
    node.require(
        all(v is not None for v in arrays.values()),
        "BatchNormalization needs scale, B, mean and var",
    )
    node.require(bool((arrays["running_var"] >= 0).all()), "input_var must be >= 0")
    name = "BatchNorm1d" if node.flat else "BatchNorm2d"
    cls = _layer_class(name, node)
    layer = cls(c, eps=eps)
    return [ImportedLayer(layer, arrays)]


# Layers after which the data is (batch, features), and layers that keep (batch, C, H, W).
_FLATTENING = ("Linear", "Flatten", "GlobalAvgPool2d")
_SPATIAL = ("Conv2d", "MaxPool2d", "AvgPool2d")

# Ops that may end the graph after the logits: fastnn's model outputs the scores and
# predict_proba applies the softmax itself, so these are dropped.
_TRAILING_NORMALIZERS = ("Softmax", "LogSoftmax")


def _read_proto(path):
    onnx = _require_onnx()
    if isinstance(path, (bytes, bytearray)):
        data = bytes(path)
    else:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        size = os.path.getsize(path)
        if size > MAX_FILE_BYTES:
            raise ValueError(
                f"{os.fspath(path)!r} is {size} bytes, more than the "
                f"{MAX_FILE_BYTES} an ONNX model of fastnn's size can be"
            )
        with open(path, "rb") as f:
            data = f.read()
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as exc:  # noqa: BLE001 (protobuf's DecodeError, RecursionError on deep nesting)
        raise ValueError(f"not a valid ONNX file: {exc}") from None
    if not proto.HasField("graph"):
        raise ValueError("not a valid ONNX file: it holds no graph")
    if len(proto.graph.node) > MAX_NODES:
        raise ValueError(
            f"the graph has {len(proto.graph.node)} nodes, more than the {MAX_NODES} supported"
        )
    if not all(isinstance(text, str) for text in _names(proto)):
        # protobuf hands out a string field that is not valid UTF-8 as bytes
        raise ValueError("not a valid ONNX file: a name is not valid UTF-8 text")
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx") and not 1 <= opset.version <= 1000:
            raise ValueError(f"invalid opset version {opset.version}")
    for node in proto.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(
                f"node {_node_label(node)}: operators of domain {node.domain!r} are not supported"
            )
    return proto


def _tensor_names(tensor):
    yield tensor.name
    for entry in tensor.external_data:
        yield entry.key
        yield entry.value


def _names(proto):
    """Every string of the model that loading reads (names, op types, external data paths)."""
    graph = proto.graph
    for opset in proto.opset_import:
        yield opset.domain
    for node in graph.node:
        yield from (node.name, node.op_type, node.domain, *node.input, *node.output)
        for a in node.attribute:
            yield a.name
            if a.HasField("t"):
                yield from _tensor_names(a.t)
    for tensor in graph.initializer:
        yield from _tensor_names(tensor)
    for value in (*graph.input, *graph.output):
        yield value.name
        dims = value.type.tensor_type.shape.dim if value.type.HasField("tensor_type") else ()
        for d in dims:
            yield d.dim_param


def _value_shape(value_info):
    """Per-sample shape of a graph input (batch axis dropped), or None if any dim is unknown."""
    t = value_info.type
    if not t.HasField("tensor_type"):
        raise ValueError(f"input {value_info.name!r} is not a tensor")
    if t.tensor_type.elem_type not in (_FLOAT, 0):
        raise ValueError(
            f"input {value_info.name!r} must be float32, got element type {t.tensor_type.elem_type}"
        )
    if not t.tensor_type.HasField("shape"):
        return None
    dims = t.tensor_type.shape.dim
    if len(dims) < 2 or len(dims) > 5:
        raise ValueError(
            f"input {value_info.name!r} must have a batch axis and 1 to 4 more, "
            f"got {len(dims)} axes"
        )
    shape = []
    for d in dims[1:]:
        if not d.HasField("dim_value"):
            return None
        if not 1 <= d.dim_value <= MAX_DIM:
            raise ValueError(f"input {value_info.name!r} declares an invalid size {d.dim_value}")
        shape.append(int(d.dim_value))
    if math.prod(shape) > MAX_TENSOR_ELEMENTS:
        raise ValueError(f"input {value_info.name!r} declares {shape} per sample, too large")
    return tuple(shape)


def _chain(proto, graph):
    """The nodes from the graph input to its first output, in order, as a chain (each one
    takes the previous node's output and constants)."""
    g = proto.graph
    inputs = [v for v in g.input if not graph.is_constant(v.name)]
    if len(inputs) != 1:
        raise ValueError(f"the graph must have one data input, got {[v.name for v in inputs]}")
    if not g.output:
        raise ValueError("the graph has no output")
    producer = {}
    for node in g.node:
        if node.op_type == "Constant":
            continue
        for out in node.output:
            if out:
                if out in producer or graph.is_constant(out) or out == inputs[0].name:
                    raise ValueError(f"node {_node_label(node)}: output {out!r} is defined twice")
                producer[out] = node
    chain = []
    current = g.output[0].name
    while current != inputs[0].name:
        node = producer.get(current)
        if node is None:
            raise ValueError(f"{current!r} is neither the graph input nor computed by a node")
        data = [i for i in node.input if i and not graph.is_constant(i)]
        if len(data) != 1:
            raise ValueError(
                f"node {_node_label(node)}: fastnn imports chains of layers (one "
                f"data input per node), got data inputs {data}"
            )
        chain.append(node)
        if len(chain) > len(g.node):
            raise ValueError("the graph has a cycle")
        current = data[0]
    chain.reverse()
    return inputs[0], chain


def _merge_bias_adds(chain, graph):
    """MatMul followed by Add of a constant vector: one node pair, one Linear."""
    merged = []
    for node in chain:
        if (
            node.op_type == "Add"
            and merged
            and merged[-1][0].op_type == "MatMul"
            and merged[-1][1] is None
        ):
            merged[-1] = (merged[-1][0], node)
            continue
        merged.append((node, None))
    return merged


def load(path, *, backend=None) -> Sequential:
    """A fastnn Sequential from an ONNX file (or its bytes): a chain of Gemm/MatMul(+Add), Conv,
    MaxPool, AveragePool, GlobalAveragePool, BatchNormalization, Relu, LeakyRelu, Sigmoid,
    Tanh, Flatten / Reshape-to-2-D, Dropout and Identity nodes from the graph input to its
    first output; a final Softmax is dropped. Any other op, or an attribute fastnn cannot honour,
    raises ValueError naming the node."""
    proto = _read_proto(path)
    base_dir = (
        None
        if isinstance(path, (bytes, bytearray))
        else os.path.dirname(os.path.abspath(os.fspath(path)))
    )
    graph = Graph(proto, base_dir)
    input_info, chain = _chain(proto, graph)
    input_shape = _value_shape(input_info)
    while chain and chain[-1].op_type in _TRAILING_NORMALIZERS:
        chain.pop()
    imported: list[ImportedLayer] = []
    sample = input_shape  # per-sample shape at the current point, None if unknown
    model_input_shape = input_shape
    flat = None  # whether the data is (batch, features) there, when the shape is not known
    for position, (node_proto, bias_add) in enumerate(_merge_bias_adds(chain, graph)):
        node = NodeView(node_proto, sample, flat)
        if position == 0 and node.op_type == "Reshape" and sample is not None and len(sample) == 2:
            # fastnn's own export of a CNN on (N, H, W) images: the channel axis it adds
            target = (
                graph.constant(node.inputs[1], f"node {node.label}: the target shape")
                if len(node.inputs) == 2
                else None
            )
            if (
                target is not None
                and target.dtype.kind == "i"
                and [int(v) for v in target.reshape(-1)] == [-1, 1, *sample]
            ):
                sample = (1, *sample)
                continue
        importer = IMPORTERS.get(node.op_type)
        if importer is None:
            raise node.error(
                f"unsupported operator {node.op_type} (supported: {', '.join(sorted(IMPORTERS))})"
            )
        new = importer(node, graph)
        node.check_attributes()
        if bias_add is not None:
            _add_bias(new, NodeView(bias_add, None), graph)
        for item in new:
            imported.append(item)
            kind = type(item.layer).__name__
            if kind in _FLATTENING:
                flat = True
            elif kind in _SPATIAL:
                flat = False
            if sample is not None:
                try:
                    sample = item.layer.output_shape(sample)
                except ValueError as exc:
                    raise node.error(str(exc)) from None
    return _build(imported, model_input_shape, backend)


def _add_bias(imported, add, graph):
    data = [i for i in add.inputs if i and not graph.is_constant(i)]
    constants = [i for i in add.inputs if i and graph.is_constant(i)]
    add.require(len(data) == 1 and len(constants) == 1, "Add after MatMul must add a constant")
    linear = imported[0]
    out = linear.layer.out_features
    bias = _float_param(add, graph, add.inputs.index(constants[0]), "the bias")
    add.require(
        bias.size == out and bias.shape[-1] == out,
        f"the bias must have {out} values, got shape {bias.shape}",
    )
    linear.params["bias"] = np.ascontiguousarray(bias.reshape(out))


def _build(imported, input_shape, backend):
    if not any(item.params for item in imported):
        raise ValueError("the graph has no layer with parameters (Gemm, MatMul or Conv)")
    config = {
        "layers": [{"type": type(item.layer).__name__, **item.layer.config()} for item in imported],
        "input_shape": None if input_shape is None else list(input_shape),
        "dtype": "float32",
    }
    model = Sequential.from_config(config, backend=backend, initialize=False)
    expected = model.param_shapes()
    state = {}
    for i, item in enumerate(imported):
        for name, value in item.params.items():
            key = f"{i}.{name}"
            if key not in expected:
                raise ValueError(f"layer {i} ({item.layer!r}) has no parameter {name!r}")
            state[key] = np.ascontiguousarray(value, np.float32)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"the graph gives no values for {missing}")
    model.load_state_dict(state)
    if input_shape is not None:
        out = model.output_shape(input_shape)
        if len(out) != 1:
            raise ValueError(
                f"the graph's output has shape {out} per sample; fastnn needs one score per class"
            )
    return model.eval()
