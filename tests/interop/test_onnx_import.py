"""fastnn.onnx.load: graphs in the patterns torch.onnx.export writes for an equivalent
nn.Sequential (built here with onnx.helper: PyTorch is not a dependency) load into a Sequential
that computes what ONNX Runtime computes; unsupported ops and attributes are refused naming the
node; hostile files raise ValueError without crashing or allocating what they declare."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
fastnn_onnx = pytest.importorskip("fastnn.onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

PROBA_ATOL = 1e-5


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def torch_like_model(
    nodes,
    initializers,
    input_shape,
    out_features=10,
    input_name="input.1",
    output_name="18",
    opset=17,
):
    """A ModelProto laid out as torch.onnx.export writes one: input 'input.1' with a dynamic
    batch axis, weights as initializers named after the module path, node names '/0/Conv'."""
    graph = helper.make_graph(
        nodes,
        "main_graph",
        [
            helper.make_tensor_value_info(
                input_name, TensorProto.FLOAT, ["batch_size", *input_shape]
            )
        ],
        [
            helper.make_tensor_value_info(
                output_name, TensorProto.FLOAT, ["batch_size", out_features]
            )
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="pytorch", ir_version=8
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def weights(rng, *shape, scale=0.1):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def torch_cnn_graph(rng, reshape_with="Flatten"):
    """nn.Sequential(Conv2d(1, 4, 5, padding=2), ReLU(), MaxPool2d(2), Conv2d(4, 8, 3,
    stride=2), ReLU(), MaxPool2d(2), Flatten(), Linear(72, 32), ReLU(), Linear(32, 10)),
    exported the way torch does: every Conv/MaxPool attribute written out."""
    inits = [
        init("0.weight", weights(rng, 4, 1, 5, 5)),
        init("0.bias", weights(rng, 4)),
        init("3.weight", weights(rng, 8, 4, 3, 3)),
        init("3.bias", weights(rng, 8)),
        init("7.weight", weights(rng, 32, 72)),
        init("7.bias", weights(rng, 32)),
        init("9.weight", weights(rng, 10, 32)),
        init("9.bias", weights(rng, 10)),
    ]
    nodes = [
        helper.make_node(
            "Conv",
            ["input.1", "0.weight", "0.bias"],
            ["/0/Conv_output_0"],
            name="/0/Conv",
            dilations=[1, 1],
            group=1,
            kernel_shape=[5, 5],
            pads=[2, 2, 2, 2],
            strides=[1, 1],
        ),
        helper.make_node("Relu", ["/0/Conv_output_0"], ["/1/Relu_output_0"], name="/1/Relu"),
        helper.make_node(
            "MaxPool",
            ["/1/Relu_output_0"],
            ["/2/MaxPool_output_0"],
            name="/2/MaxPool",
            ceil_mode=0,
            dilations=[1, 1],
            kernel_shape=[2, 2],
            pads=[0, 0, 0, 0],
            strides=[2, 2],
        ),
        helper.make_node(
            "Conv",
            ["/2/MaxPool_output_0", "3.weight", "3.bias"],
            ["/3/Conv_output_0"],
            name="/3/Conv",
            dilations=[1, 1],
            group=1,
            kernel_shape=[3, 3],
            pads=[0, 0, 0, 0],
            strides=[2, 2],
        ),
        helper.make_node("Relu", ["/3/Conv_output_0"], ["/4/Relu_output_0"], name="/4/Relu"),
        helper.make_node(
            "MaxPool",
            ["/4/Relu_output_0"],
            ["/5/MaxPool_output_0"],
            name="/5/MaxPool",
            ceil_mode=0,
            kernel_shape=[2, 2],
            pads=[0, 0, 0, 0],
            strides=[2, 2],
        ),
    ]
    if reshape_with == "Flatten":
        nodes.append(
            helper.make_node(
                "Flatten",
                ["/5/MaxPool_output_0"],
                ["/6/Flatten_output_0"],
                name="/6/Flatten",
                axis=1,
            )
        )
    elif reshape_with == "Reshape":  # x.view(-1, 72) with the shape as an initializer
        inits.append(init("/6/Constant_output_0", np.array([-1, 72], np.int64)))
        nodes.append(
            helper.make_node(
                "Reshape",
                ["/5/MaxPool_output_0", "/6/Constant_output_0"],
                ["/6/Flatten_output_0"],
                name="/6/Reshape",
                allowzero=0,
            )
        )
    else:  # the same with a Constant node, as older exporters wrote it
        nodes.append(
            helper.make_node(
                "Constant",
                [],
                ["/6/Constant_output_0"],
                name="/6/Constant",
                value=init("c", np.array([0, -1], np.int64)),
            )
        )
        nodes.append(
            helper.make_node(
                "Reshape",
                ["/5/MaxPool_output_0", "/6/Constant_output_0"],
                ["/6/Flatten_output_0"],
                name="/6/Reshape",
            )
        )
    nodes += [
        helper.make_node(
            "Gemm",
            ["/6/Flatten_output_0", "7.weight", "7.bias"],
            ["/7/Gemm_output_0"],
            name="/7/Gemm",
            alpha=1.0,
            beta=1.0,
            transB=1,
        ),
        helper.make_node("Relu", ["/7/Gemm_output_0"], ["/8/Relu_output_0"], name="/8/Relu"),
        helper.make_node(
            "Gemm",
            ["/8/Relu_output_0", "9.weight", "9.bias"],
            ["18"],
            name="/9/Gemm",
            alpha=1.0,
            beta=1.0,
            transB=1,
        ),
    ]
    return torch_like_model(nodes, inits, (1, 28, 28))


def torch_mlp_graph(rng, activation="Relu", trailing_softmax=False):
    """nn.Sequential(Flatten(), Linear(784, 64), <activation>, Dropout(), Linear(64, 10)) in
    eval mode, on (N, 1, 28, 28) input."""
    inits = [
        init("1.weight", weights(rng, 64, 784, scale=0.05)),
        init("1.bias", weights(rng, 64)),
        init("4.weight", weights(rng, 10, 64)),
        init("4.bias", weights(rng, 10)),
    ]
    out = "logits" if trailing_softmax else "18"
    act = helper.make_node(activation, ["/1/Gemm_output_0"], ["/2/act"], name=f"/2/{activation}")
    if activation == "LeakyRelu":
        act = helper.make_node(
            "LeakyRelu", ["/1/Gemm_output_0"], ["/2/act"], name="/2/LeakyRelu", alpha=0.1
        )
    nodes = [
        helper.make_node(
            "Flatten", ["input.1"], ["/0/Flatten_output_0"], name="/0/Flatten", axis=1
        ),
        helper.make_node(
            "Gemm",
            ["/0/Flatten_output_0", "1.weight", "1.bias"],
            ["/1/Gemm_output_0"],
            name="/1/Gemm",
            alpha=1.0,
            beta=1.0,
            transB=1,
        ),
        act,
        helper.make_node("Dropout", ["/2/act"], ["/3/Dropout_output_0"], name="/3/Dropout"),
        helper.make_node(
            "Gemm",
            ["/3/Dropout_output_0", "4.weight", "4.bias"],
            [out],
            name="/4/Gemm",
            alpha=1.0,
            beta=1.0,
            transB=1,
        ),
    ]
    if trailing_softmax:
        nodes.append(helper.make_node("Softmax", [out], ["18"], name="/5/Softmax", axis=1))
    return torch_like_model(nodes, inits, (1, 28, 28))


def onnx_outputs(proto, x):
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {proto.graph.input[0].name: x})[0]


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def nchw(images):
    return images[:, None].astype(np.float32) / 255


def assert_same_as_onnxruntime(proto, images, already_softmax=False):
    model = fastnn_onnx.load(proto.SerializeToString())
    x = nchw(images)
    expected = onnx_outputs(proto, x)
    expected = expected if already_softmax else softmax(expected.astype(np.float64))
    np.testing.assert_allclose(model.predict_proba(x), expected, atol=PROBA_ATOL)
    np.testing.assert_array_equal(model.predict(x), expected.argmax(axis=1))
    # fastnn scales uint8 images itself: (N, 28, 28) uint8 gives the same answer
    np.testing.assert_array_equal(model.predict(images), model.predict(x))
    return model


@pytest.mark.parametrize("reshape_with", ["Flatten", "Reshape", "ConstantReshape"])
def test_torch_style_cnn_loads(reshape_with, mnist_test):
    model = assert_same_as_onnxruntime(
        torch_cnn_graph(np.random.default_rng(0), reshape_with), mnist_test[0]
    )
    assert [type(layer).__name__ for layer in model] == [
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Conv2d",
        "ReLU",
        "MaxPool2d",
        "Flatten",
        "Linear",
        "ReLU",
        "Linear",
    ]
    assert model.input_shape == (1, 28, 28)
    assert (model[0].padding, model[3].stride) == (2, 2)


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid", "Tanh"])
def test_torch_style_mlp_loads(activation, mnist_test):
    assert_same_as_onnxruntime(torch_mlp_graph(np.random.default_rng(1), activation), mnist_test[0])


def test_trailing_softmax_is_dropped(mnist_test):
    proto = torch_mlp_graph(np.random.default_rng(2), trailing_softmax=True)
    model = assert_same_as_onnxruntime(proto, mnist_test[0], already_softmax=True)
    assert type(model[-1]).__name__ == "Linear"


def test_matmul_add_and_gemm_variants(mnist_test):
    """Linear as MatMul + Add (weight stored (in, out)), Gemm with transB=0 and alpha/beta,
    Conv without bias, Identity nodes: all one chain of Linear/Conv2d layers."""
    rng = np.random.default_rng(3)
    w1, b1 = weights(rng, 784, 32, scale=0.05), weights(rng, 32)
    w2, b2 = weights(rng, 32, 10), weights(rng, 10)
    conv_w = weights(rng, 1, 1, 1, 1, scale=1.0)
    nodes = [
        helper.make_node("Conv", ["x", "cw"], ["c"], name="conv_no_bias", kernel_shape=[1, 1]),
        helper.make_node("Identity", ["c"], ["i"], name="identity"),
        helper.make_node("Flatten", ["i"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "w1"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "b1"], ["a"], name="add"),
        helper.make_node("Tanh", ["a"], ["t"], name="tanh"),
        helper.make_node("Gemm", ["t", "w2", "b2"], ["y"], name="gemm", alpha=0.5, beta=2.0),
    ]
    proto = torch_like_model(
        nodes,
        [init("cw", conv_w), init("w1", w1), init("b1", b1), init("w2", w2), init("b2", b2)],
        (1, 28, 28),
        input_name="x",
        output_name="y",
    )
    model = assert_same_as_onnxruntime(proto, mnist_test[0])
    assert [type(layer).__name__ for layer in model] == [
        "Conv2d",
        "Flatten",
        "Linear",
        "Tanh",
        "Linear",
    ]
    np.testing.assert_array_equal(model.state_dict()["2.weight"], w1.T)


def test_loaded_models_train_and_save(mnist_train_small, tmp_path):
    """An imported model is an ordinary Sequential: it fine-tunes and saves as .npz."""
    x, y = mnist_train_small
    model = fastnn_onnx.load(torch_mlp_graph(np.random.default_rng(4)).SerializeToString())
    before = model.state_dict()["1.weight"].copy()
    fastnn.seed(0)
    fastnn.Trainer(model, fastnn.optim.SGD(lr=0.01)).fit(x[:256], y[:256], verbose=0)
    assert not np.array_equal(model.state_dict()["1.weight"], before)
    model.save(tmp_path / "m.npz")
    np.testing.assert_array_equal(fastnn.load(tmp_path / "m.npz").predict(x), model.predict(x))


# ---- refusals that name the node ----------------------------------------------------------------


def one_node_graph(node, inits=(), input_shape=(1, 8, 8), out_features=None):
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, ["N", *input_shape])],
        [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, None)],
        initializer=list(inits),
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8
    ).SerializeToString()


CONV_W = init("w", np.ones((2, 1, 3, 3), np.float32))


@pytest.mark.parametrize(
    "node, message",
    [
        (
            helper.make_node("Selu", ["x"], ["y"], name="act7"),
            r"'act7' \(Selu\).*unsupported operator",
        ),
        (helper.make_node("Conv", ["x", "w"], ["y"], name="c1", group=2), r"'c1'.*group"),
        (
            helper.make_node("Conv", ["x", "w"], ["y"], name="c2", dilations=[2, 2]),
            r"'c2'.*dilations",
        ),
        (helper.make_node("Conv", ["x", "w"], ["y"], name="c3", pads=[1, 0, 1, 0]), r"'c3'.*pads"),
        (
            helper.make_node("Conv", ["x", "w"], ["y"], name="c4", auto_pad="SAME_UPPER"),
            r"'c4'.*auto_pad",
        ),
        (helper.make_node("Conv", ["x", "w"], ["y"], name="c5", strides=[1, 2]), r"'c5'.*strides"),
        (helper.make_node("Conv", ["x", "w"], ["y"], name="c6", foo=3), r"'c6'.*attribute.*foo"),
        (
            helper.make_node(
                "MaxPool", ["x"], ["y"], name="p1", kernel_shape=[2, 2], pads=[1, 1, 1, 1]
            ),
            r"'p1'.*padding",
        ),
        (
            helper.make_node("MaxPool", ["x"], ["y"], name="p2", kernel_shape=[2, 2], ceil_mode=1),
            r"'p2'.*ceil_mode",
        ),
        (
            helper.make_node("MaxPool", ["x"], ["y"], name="p3", kernel_shape=[2, 3]),
            r"'p3'.*square",
        ),
        (helper.make_node("Flatten", ["x"], ["y"], name="f1", axis=2), r"'f1'.*axis"),
        (helper.make_node("Gemm", ["x", "w"], ["y"], name="g1", transA=1), r"'g1'.*transA"),
    ],
)
def test_unsupported_ops_and_attributes_name_the_node(node, message):
    data = one_node_graph(node, [CONV_W] if "w" in node.input else [])
    with pytest.raises(ValueError, match=message):
        fastnn_onnx.load(data)


def test_computed_weights_and_branches_are_refused():
    # the weight computed from the input: not a chain of layers
    node = helper.make_node("Gemm", ["x", "x"], ["y"], name="g")
    with pytest.raises(ValueError, match="data input"):
        fastnn_onnx.load(one_node_graph(node, input_shape=(8,)))
    # a reshape that is not a flatten
    node = helper.make_node("Reshape", ["x", "s"], ["y"], name="r")
    with pytest.raises(ValueError, match=r"'r'.*reshapes to \(batch, features\)"):
        fastnn_onnx.load(one_node_graph(node, [init("s", np.array([-1, 2, 32], np.int64))]))


# ---- hostile files --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_bytes():
    return torch_cnn_graph(np.random.default_rng(5), "Reshape").SerializeToString()


def test_truncated_files_raise_value_error(valid_bytes):
    step = max(1, len(valid_bytes) // 97)
    for cut in [0, 1, 2, 10, 100, *range(3, len(valid_bytes), step)]:
        try:
            fastnn_onnx.load(valid_bytes[:cut])
        except ValueError:
            continue
        pytest.fail(f"a file cut at {cut} of {len(valid_bytes)} bytes loaded")


def test_files_that_are_not_onnx(tmp_path):
    for data in [
        b"",
        b"\x00" * 64,
        b"PK\x03\x04 not onnx",
        np.arange(999, dtype=np.uint8).tobytes(),
        b"\x0a" * 200,
    ]:
        path = tmp_path / "bad.onnx"
        path.write_bytes(data)
        with pytest.raises(ValueError):
            fastnn_onnx.load(path)
    with pytest.raises(TypeError, match="path"):
        fastnn_onnx.load(123)
    with pytest.raises(FileNotFoundError):
        fastnn_onnx.load(tmp_path / "missing.onnx")


def gemm_graph(weight_tensor, input_shape=(4,), input_type=TensorProto.FLOAT):
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="g", transB=1)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("x", input_type, ["N", *input_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[weight_tensor],
    )
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8
    ).SerializeToString()


def raw_tensor(dims, data_type=TensorProto.FLOAT, raw=b"\x00" * 48):
    t = TensorProto(name="w", data_type=data_type, dims=dims)
    t.raw_data = raw
    return t


@pytest.mark.parametrize(
    "tensor, message",
    [
        (raw_tensor([1 << 20, 1 << 20]), "elements"),  # 2^40 floats declared, 48 bytes held
        (raw_tensor([1 << 40, 3]), "invalid shape"),
        (raw_tensor([-4, 3]), "invalid shape"),
        (raw_tensor([4, 4]), "holds 48 bytes"),  # 16 floats declared, 12 held
        (raw_tensor([3, 4], TensorProto.STRING), "element type"),
        (raw_tensor([3, 4], TensorProto.UINT8, b"\x00" * 12), "element type"),
        (raw_tensor([3, 4], TensorProto.INT64, b"\x00" * 96), "floating point"),
        (raw_tensor([3, 4], TensorProto.FLOAT, np.full(12, np.nan, np.float32).tobytes()), "NaN"),
        (
            TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[3, 4], float_data=[1.0] * 5),
            "holds 5 values",
        ),
        (TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 14, 1 << 14]), "elements"),
    ],
)
def test_bad_tensors_raise_value_error(tensor, message):
    with pytest.raises(ValueError, match=message):
        fastnn_onnx.load(gemm_graph(tensor))


def external_tensor(location, offset=0, length=48):
    t = raw_tensor([3, 4], raw=b"")
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
        entry = t.external_data.add()
        entry.key, entry.value = key, value
    return t


def test_torch_dynamo_style_file_with_external_data_loads(mnist_test, tmp_path):
    """torch.onnx.export(dynamo=True) writes the weights to 'model.onnx.data' beside the model
    and flattens with Reshape(allowzero=1) to (-1, features)."""
    rng = np.random.default_rng(6)
    inits = [
        init("0.weight", weights(rng, 32, 784, scale=0.05)),
        init("0.bias", weights(rng, 32)),
        init("2.weight", weights(rng, 10, 32)),
        init("2.bias", weights(rng, 10)),
        init("val_0", np.array([-1, 784], np.int64)),
    ]
    nodes = [
        helper.make_node("Reshape", ["input", "val_0"], ["view"], allowzero=1),
        helper.make_node(
            "Gemm",
            ["view", "0.weight", "0.bias"],
            ["linear"],
            alpha=1.0,
            beta=1.0,
            transA=0,
            transB=1,
        ),
        helper.make_node("Sigmoid", ["linear"], ["sigmoid"]),
        helper.make_node("Gemm", ["sigmoid", "2.weight", "2.bias"], ["logits"], transB=1),
    ]
    proto = torch_like_model(
        nodes, inits, (1, 28, 28), input_name="input", output_name="logits", opset=20
    )
    x = nchw(mnist_test[0])
    expected = softmax(onnx_outputs(proto, x))  # saving moves the weights out of `proto`
    path = tmp_path / "model.onnx"
    onnx.save_model(
        proto, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0
    )
    stored = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in stored.graph.initializer)
    model = fastnn_onnx.load(path)
    np.testing.assert_allclose(model.predict_proba(x), expected, atol=PROBA_ATOL)
    with pytest.raises(ValueError, match="loaded from its path"):
        fastnn_onnx.load(stored.SerializeToString())


@pytest.mark.parametrize(
    "location, offset, length, message",
    [
        ("/etc/passwd", 0, 48, "not a file beside the model"),
        ("../outside.bin", 0, 48, "not a file beside the model"),
        ("sub/../../outside.bin", 0, 48, "not a file beside the model"),
        ("missing.bin", 0, 48, "not a file beside the model"),
        ("", 0, 48, "not a file beside the model"),
        ("link.bin", 0, 48, "not a file beside the model"),  # a symlink out of the directory
        ("weights.bin", 40, 48, "has 64"),  # runs past the end
        ("weights.bin", 0, 4096, "needs 48 bytes"),  # length does not match shape
        ("weights.bin", -8, 48, "offset"),
        ("weights.bin", "x", 48, "invalid"),
    ],
)
def test_external_data_stays_beside_the_model(location, offset, length, message, tmp_path):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (tmp_path / "outside.bin").write_bytes(b"\x00" * 64)
    (model_dir / "weights.bin").write_bytes(b"\x00" * 64)
    (model_dir / "link.bin").symlink_to(tmp_path / "outside.bin")
    path = model_dir / "m.onnx"
    path.write_bytes(gemm_graph(external_tensor(location, offset, length)))
    with pytest.raises(ValueError, match=message):
        fastnn_onnx.load(path)


def test_external_data_inside_the_directory_is_read(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"\xff" * 16 + np.arange(12, dtype="<f4").tobytes())
    path = tmp_path / "m.onnx"
    path.write_bytes(gemm_graph(external_tensor("weights.bin", offset=16)))
    model = fastnn_onnx.load(path)
    np.testing.assert_array_equal(
        model.state_dict()["0.weight"], np.arange(12, dtype=np.float32).reshape(3, 4)
    )


def test_bad_inputs_raise_value_error():
    w = init("w", np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match="invalid size"):
        fastnn_onnx.load(gemm_graph(w, input_shape=(1 << 40,)))
    with pytest.raises(ValueError, match="too large"):
        fastnn_onnx.load(gemm_graph(w, input_shape=(1 << 20, 1 << 20)))
    with pytest.raises(ValueError, match="float32"):
        fastnn_onnx.load(gemm_graph(w, input_type=TensorProto.INT64))
    with pytest.raises(ValueError, match="layer 0|4 features"):  # shape does not fit the weight
        fastnn_onnx.load(gemm_graph(w, input_shape=(5,)))


def test_cycles_and_missing_producers_raise_value_error():
    nodes = [
        helper.make_node("Relu", ["b"], ["a"], name="r1"),
        helper.make_node("Relu", ["a"], ["b"], name="r2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, None)],
    )
    data = helper.make_model(graph, ir_version=8).SerializeToString()
    with pytest.raises(ValueError, match="cycle"):
        fastnn_onnx.load(data)
    graph = helper.make_graph(
        [],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("nowhere", TensorProto.FLOAT, None)],
    )
    with pytest.raises(ValueError, match="neither"):
        fastnn_onnx.load(helper.make_model(graph, ir_version=8).SerializeToString())


@pytest.mark.parametrize("name", [b"dilations", b"/0/Conv", b"0.weight", b"Reshape"])
def test_names_that_are_not_utf8_raise_value_error(valid_bytes, name):
    """protobuf returns such string fields as bytes (found by the fuzz test below)."""
    damaged = valid_bytes.replace(name, b"\xff" + name[1:], 1)
    assert damaged != valid_bytes
    with pytest.raises(ValueError, match="UTF-8"):
        fastnn_onnx.load(damaged)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_corrupted_files_load_or_raise_value_error(valid_bytes, data):
    """Flipped bytes anywhere: a model (when the damage hit only weight values) or ValueError."""
    raw = bytearray(valid_bytes)
    for _ in range(data.draw(st.integers(1, 8))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    try:
        model = fastnn_onnx.load(bytes(raw))
    except ValueError:
        return
    assert isinstance(model, nn.Sequential)
