"""The workloads' inference through ONNX Runtime (CPU), for the side-by-side column.

The graph is the very fastnn model of `fastnn_impl.Network`, weights included, written by
fastnn's own exporter (`fastnn.onnx.to_model_proto`), so both columns compute the same thing.
ONNX Runtime runs with as many intra-op threads as fastnn's kernels use (one inter-op thread,
sequential execution), and `predict` returns the classes, as fastnn's `predict` does. onnx and
onnxruntime are never dependencies of fastnn: `available()` says whether both import here.
"""

import numpy as np

try:
    import onnxruntime as ort
except ImportError as exc:  # pragma: no cover - depends on the environment
    ort = None
    _why = f"onnxruntime is not importable: {exc}"
else:
    try:
        import onnx  # noqa: F401  (fastnn's exporter builds the graph with it)
    except ImportError as exc:  # pragma: no cover
        ort = None
        _why = f"onnx is not importable: {exc}"
    else:
        _why = None


def available():
    return ort is not None


def why_unavailable():
    return _why


def describe():
    """e.g. "onnxruntime 1.23.2, 2 intra-op threads" (None without onnxruntime)."""
    if ort is None:
        return None
    return f"onnxruntime {ort.__version__}, {threads()} intra-op threads"


def threads():
    """fastnn's kernel thread count, which ONNX Runtime is given too."""
    import fastnn

    return fastnn.get_num_threads()


class Network:
    """ONNX Runtime session for the fastnn model `fastnn_net.model` (a fastnn_impl.Network)."""

    def __init__(self, fastnn_net):
        from fastnn import onnx as fastnn_onnx

        proto = fastnn_onnx.to_model_proto(fastnn_net.model)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            proto.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = self.session.get_inputs()[0].name

    @staticmethod
    def tensor(a):
        return np.ascontiguousarray(a, dtype=np.float32)

    def logits(self, x):
        return self.session.run(["logits"], {self.input_name: x})[0]

    def predict(self, x):
        return self.logits(x).argmax(axis=1)
