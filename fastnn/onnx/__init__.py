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

from ._common import (
    DEFAULT_OPSET,
    INPUT_NAME,
    LOGITS_NAME,
    MAX_DIM,
    MAX_FILE_BYTES,
    MAX_NODES,
    MAX_OPSET,
    MAX_TENSOR_ELEMENTS,
    MIN_OPSET,
    PROBABILITIES_NAME,
)
from .exporter import EXPORTERS, ExportStep, GraphBuilder, export, register_exporter, to_model_proto
from .importer import (
    IMPORTERS,
    Graph,
    ImportedLayer,
    NodeView,
    register_importer,
)
from .loader import load
from .tensors import tensor_to_array

__all__ = [
    "DEFAULT_OPSET",
    "EXPORTERS",
    "IMPORTERS",
    "INPUT_NAME",
    "LOGITS_NAME",
    "MAX_DIM",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "MAX_OPSET",
    "MAX_TENSOR_ELEMENTS",
    "MIN_OPSET",
    "PROBABILITIES_NAME",
    "ExportStep",
    "Graph",
    "GraphBuilder",
    "ImportedLayer",
    "NodeView",
    "export",
    "load",
    "register_exporter",
    "register_importer",
    "tensor_to_array",
    "to_model_proto",
]
