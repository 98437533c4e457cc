"""Constants and helpers both directions share: the opsets, the tensor names, the loading
limits, the ONNX tensor types, and the lazy import of the `onnx` package."""

from __future__ import annotations

import numpy as np

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
