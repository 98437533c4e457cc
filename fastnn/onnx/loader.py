"""`load`: read an ONNX file defensively, walk its one chain of nodes through the importers and
build the Sequential."""

from __future__ import annotations

import math
import os

import numpy as np

from ..model import Sequential
from ._common import (
    _FLOAT,
    MAX_DIM,
    MAX_FILE_BYTES,
    MAX_NODES,
    MAX_TENSOR_ELEMENTS,
    _require_onnx,
)
from .importer import IMPORTERS, Graph, ImportedLayer, NodeView, float_param, node_label

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
                f"node {node_label(node)}: operators of domain {node.domain!r} are not supported"
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
                    raise ValueError(f"node {node_label(node)}: output {out!r} is defined twice")
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
                f"node {node_label(node)}: fastnn imports chains of layers (one "
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
    bias = float_param(add, graph, add.inputs.index(constants[0]), "the bias")
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
