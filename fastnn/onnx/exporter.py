"""fastnn model -> ONNX graph: one exporter function per layer type, in a registry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .. import layers as L
from .._version import __version__
from ..fileformat import atomic_write
from ..model import Sequential
from ._common import (
    DEFAULT_OPSET,
    INPUT_NAME,
    LOGITS_NAME,
    MAX_OPSET,
    MIN_OPSET,
    PROBABILITIES_NAME,
    _require_onnx,
)


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


def _pool(op_type):
    def export(step, g, x):
        k, s = step.layer.kernel_size, step.layer.stride
        return g.node(op_type, [x], step.prefix, kernel_shape=[k, k], strides=[s, s], pads=[0] * 4)

    return export


register_exporter("MaxPool2d")(_pool("MaxPool"))
register_exporter("AvgPool2d")(_pool("AveragePool"))


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
    return g.node("LeakyRelu", [x], step.prefix, alpha=float(step.layer.negative_slope))


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
    channels = layer.num_features
    scale = p.get("weight", np.ones(channels, np.float32))  # absent when affine=False
    bias = p.get("bias", np.zeros(channels, np.float32))
    arrays = (scale, bias, p["running_mean"], p["running_var"])
    return [np.asarray(a, np.float32) for a in arrays], float(layer.eps)


def _export_batchnorm(step, g, x):
    arrays, eps = _batchnorm_stats(step)
    names = [
        g.constant(f"{step.index}.{n}", a)
        for n, a in zip(("weight", "bias", "running_mean", "running_var"), arrays)
    ]
    return g.node("BatchNormalization", [x, *names], step.prefix, epsilon=eps)


register_exporter("BatchNorm1d")(_export_batchnorm)
register_exporter("BatchNorm2d")(_export_batchnorm)


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
