"""ONNX graph -> fastnn model: one importer function per op type, in a registry; nothing in
the file is trusted (see the package docstring)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .. import layers as L
from ..model import LAYER_TYPES
from .tensors import tensor_to_array


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
                    f"node {node_label(node)}: only Constant nodes with a tensor "
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
        return node_label(self.node)

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


def node_label(node):
    return f"{node.name!r} ({node.op_type})" if node.name else f"({node.op_type})"


def float_param(node, graph, index, what, shape=None):
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
    w = float_param(node, graph, 1, "B (the weight)")
    node.require(w.ndim == 2, f"B must be 2-D, got shape {w.shape}")
    w = w if trans_b else w.T
    out_features, in_features = w.shape
    b = float_param(node, graph, 2, "C (the bias)")
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
    w = float_param(node, graph, 1, "B (the weight)")
    node.require(w.ndim == 2, f"B must be 2-D, got shape {w.shape}")
    return [
        ImportedLayer(
            L.Linear(w.shape[0], w.shape[1]),
            {"weight": np.ascontiguousarray(w.T), "bias": np.zeros(w.shape[1], np.float32)},
        )
    ]


@register_importer("Conv")
def _import_conv(node, graph):
    w = float_param(node, graph, 1, "W (the weight)")
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
    b = float_param(node, graph, 2, "B (the bias)", (out_ch,))
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


def _layer_class(name, node):
    cls = LAYER_TYPES.get(name)
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
    scale = float_param(node, graph, 1, "scale")
    node.require(scale is not None and scale.ndim == 1, "scale must be a 1-D constant")
    c = scale.shape[0]
    arrays = {
        "weight": scale,
        "bias": float_param(node, graph, 2, "B (the bias)", (c,)),
        "running_mean": float_param(node, graph, 3, "input_mean", (c,)),
        "running_var": float_param(node, graph, 4, "input_var", (c,)),
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
