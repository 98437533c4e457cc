"""ONNX export and import of BatchNorm1d/2d (running statistics), AvgPool2d, GlobalAvgPool2d and
LeakyReLU: onnxruntime agrees with fastnn, export -> load is exact, and the node patterns
torch.onnx.export writes for them load."""

import numpy as np
import pytest

import fastnn
from fastnn import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
fastnn_onnx = pytest.importorskip("fastnn.onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

pytestmark = pytest.mark.skipif(
    not all(
        hasattr(nn, name)
        for name in ("BatchNorm1d", "BatchNorm2d", "AvgPool2d", "GlobalAvgPool2d", "LeakyReLU")
    ),
    reason="this fastnn has no BatchNorm/AvgPool2d/GlobalAvgPool2d/LeakyReLU layers",
)

PROBA_ATOL = 1e-5


def with_running_statistics(model, seed):
    """Running means and variances away from 0 and 1, and non-trivial BatchNorm scales, so
    the exported statistics matter."""
    rng = np.random.default_rng(seed)
    state = model.state_dict()
    for name, value in state.items():
        layer = model[int(name.split(".")[0])]
        if type(layer).__name__.startswith("BatchNorm"):
            if name.endswith("running_mean"):
                state[name] = rng.normal(0, 0.3, value.shape).astype(value.dtype)
            elif name.endswith("running_var"):
                state[name] = rng.uniform(0.2, 3.0, value.shape).astype(value.dtype)
            else:
                state[name] = rng.normal(
                    1 if name.endswith("weight") else 0, 0.3, value.shape
                ).astype(value.dtype)
    model.load_state_dict(state)
    return model.eval()


CASES = {
    "BatchNorm2d": lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 13 * 13, 10),
    ),
    "BatchNorm2d (no affine)": lambda: nn.Sequential(
        nn.Conv2d(1, 3, 5, padding="same"),
        nn.BatchNorm2d(3, eps=1e-3, affine=False),
        nn.Flatten(),
        nn.Linear(3 * 28 * 28, 10),
    ),
    "BatchNorm1d": lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(784, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10)
    ),
    "AvgPool2d": lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3),
        nn.AvgPool2d(3, stride=2),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 10),
    ),
    "GlobalAvgPool2d": lambda: nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.GlobalAvgPool2d(), nn.Linear(8, 10)
    ),
    "LeakyReLU": lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(784, 24), nn.LeakyReLU(0.2), nn.Linear(24, 10)
    ),
}


def exported(case, tmp_path, seed=0):
    fastnn.seed(seed)
    model = with_running_statistics(CASES[case](), seed)
    model.input_shape = (28, 28)
    path = tmp_path / "model.onnx"
    fastnn_onnx.export(model, path)
    return model, path


@pytest.mark.parametrize("case", sorted(CASES))
def test_new_layers_agree_with_onnxruntime(case, mnist_test, tmp_path):
    model, path = exported(case, tmp_path)
    x = mnist_test[0]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    _, proba = session.run(None, {"input": x.astype(np.float32) / 255})
    np.testing.assert_allclose(proba, model.predict_proba(x), atol=PROBA_ATOL)
    np.testing.assert_array_equal(proba.argmax(axis=1), model.predict(x))


@pytest.mark.parametrize("case", sorted(CASES))
def test_new_layers_round_trip(case, mnist_test, tmp_path):
    model, path = exported(case, tmp_path)
    loaded = fastnn_onnx.load(path)
    assert [type(layer) for layer in loaded] == [type(layer) for layer in model]
    x = mnist_test[0]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    # running statistics are float64 in fastnn and float32 in the file: float32 agreement
    np.testing.assert_allclose(loaded.predict_proba(x), model.predict_proba(x), atol=1e-6)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.asarray(array).dtype), name)


def test_torch_style_batchnorm_pooling_graph_loads(mnist_test):
    """nn.Sequential(Conv2d(1, 4, 3), BatchNorm2d(4), LeakyReLU(0.1), AvgPool2d(2),
    Conv2d(4, 6, 3), ReLU(), AdaptiveAvgPool2d(1), Flatten(), Linear(6, 16), BatchNorm1d(16),
    ReLU(), Linear(16, 10)) as torch exports it in eval mode, batch axis dynamic."""
    rng = np.random.default_rng(0)

    def w(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    inits = [
        init("0.weight", w(4, 1, 3, 3)),
        init("0.bias", w(4)),
        init("1.weight", 1 + w(4)),
        init("1.bias", w(4)),
        init("1.running_mean", w(4)),
        init("1.running_var", 0.5 + np.abs(w(4))),
        init("4.weight", w(6, 4, 3, 3)),
        init("4.bias", w(6)),
        init("8.weight", w(16, 6)),
        init("8.bias", w(16)),
        init("9.weight", 1 + w(16)),
        init("9.bias", w(16)),
        init("9.running_mean", w(16)),
        init("9.running_var", 0.5 + np.abs(w(16))),
        init("11.weight", w(10, 16)),
        init("11.bias", w(10)),
    ]
    nodes = [
        helper.make_node(
            "Conv",
            ["input", "0.weight", "0.bias"],
            ["c0"],
            name="/0/Conv",
            dilations=[1, 1],
            group=1,
            kernel_shape=[3, 3],
            pads=[0, 0, 0, 0],
            strides=[1, 1],
        ),
        helper.make_node(
            "BatchNormalization",
            ["c0", "1.weight", "1.bias", "1.running_mean", "1.running_var"],
            ["b1"],
            name="/1/BatchNormalization",
            epsilon=1e-5,
            momentum=0.9,
        ),
        helper.make_node("LeakyRelu", ["b1"], ["l2"], name="/2/LeakyRelu", alpha=0.1),
        helper.make_node(
            "AveragePool",
            ["l2"],
            ["a3"],
            name="/3/AveragePool",
            ceil_mode=0,
            count_include_pad=1,
            kernel_shape=[2, 2],
            pads=[0, 0, 0, 0],
            strides=[2, 2],
        ),
        helper.make_node(
            "Conv",
            ["a3", "4.weight", "4.bias"],
            ["c4"],
            name="/4/Conv",
            kernel_shape=[3, 3],
            pads=[0, 0, 0, 0],
            strides=[1, 1],
        ),
        helper.make_node("Relu", ["c4"], ["r5"], name="/5/Relu"),
        helper.make_node("GlobalAveragePool", ["r5"], ["g6"], name="/6/GlobalAveragePool"),
        helper.make_node("Flatten", ["g6"], ["f7"], name="/7/Flatten", axis=1),
        helper.make_node(
            "Gemm",
            ["f7", "8.weight", "8.bias"],
            ["m8"],
            name="/8/Gemm",
            alpha=1.0,
            beta=1.0,
            transB=1,
        ),
        helper.make_node(
            "BatchNormalization",
            ["m8", "9.weight", "9.bias", "9.running_mean", "9.running_var"],
            ["b9"],
            name="/9/BatchNormalization",
            epsilon=1e-3,
            momentum=0.9,
        ),
        helper.make_node("Relu", ["b9"], ["r10"], name="/10/Relu"),
        helper.make_node(
            "Gemm", ["r10", "11.weight", "11.bias"], ["logits"], name="/11/Gemm", transB=1
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "main_graph",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        initializer=inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(proto, full_check=True)
    model = fastnn_onnx.load(proto.SerializeToString())
    assert [type(layer).__name__ for layer in model] == [
        "Conv2d",
        "BatchNorm2d",
        "LeakyReLU",
        "AvgPool2d",
        "Conv2d",
        "ReLU",
        "GlobalAvgPool2d",
        "Linear",
        "BatchNorm1d",
        "ReLU",
        "Linear",
    ]  # GlobalAvgPool2d flattens itself
    assert model[8].eps == pytest.approx(1e-3) and model[2].negative_slope == pytest.approx(0.1)
    x = mnist_test[0][:, None].astype(np.float32) / 255
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input": x})[0].astype(np.float64)
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.predict_proba(x), expected, atol=PROBA_ATOL)


def test_batchnorm_in_training_mode_is_refused():
    node = helper.make_node(
        "BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], name="bn", training_mode=1
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[init(n, np.ones(3, np.float32)) for n in "sbmv"],
    )
    data = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8
    ).SerializeToString()
    with pytest.raises(ValueError, match="'bn'.*training_mode"):
        fastnn_onnx.load(data)
