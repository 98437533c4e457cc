"""fastnn.onnx.export: ONNX Runtime computes what fastnn computes (float32 tolerance), for every
layer type and the example architectures, on MNIST test images; the file passes the full ONNX
checker and carries an IR version the pinned runtime loads; export -> load gives identical
predictions."""

import numpy as np
import pytest

import fastnn
from fastnn import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
fastnn_onnx = pytest.importorskip("fastnn.onnx")

# float32 tolerance on probabilities in [0, 1]: the runtimes sum in different orders
PROBA_ATOL = 1e-5
LOGIT_RTOL, LOGIT_ATOL = 1e-4, 1e-4


def run_onnx(path, x_uint8):
    """Both outputs of the exported graph, fed as the module docstring says: float32 / 255."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits, proba = session.run(None, {"input": x_uint8.astype(np.float32) / 255})
    return logits, proba


def logits_of(model, x):
    return model.backend.to_numpy(model.forward(model.prepare_input(x), False))


def assert_agrees(model, path, x):
    logits, proba = run_onnx(path, x)
    expected = model.predict_proba(x)
    np.testing.assert_allclose(proba, expected, rtol=0, atol=PROBA_ATOL)
    np.testing.assert_allclose(logits, logits_of(model, x), rtol=LOGIT_RTOL, atol=LOGIT_ATOL)
    np.testing.assert_array_equal(proba.argmax(axis=1), model.predict(x))
    return float(np.abs(proba - expected).max())


# One small model per layer type (and per attribute each exporter writes), on 28x28 images.
LAYER_CASES = {
    "Linear": lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 10)),
    "ReLU": lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 24), nn.ReLU(), nn.Linear(24, 10)),
    "Sigmoid": lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(784, 24), nn.Sigmoid(), nn.Linear(24, 10)
    ),
    "Tanh": lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 24), nn.Tanh(), nn.Linear(24, 10)),
    "Dropout": lambda: nn.Sequential(
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(784, 24),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(24, 10),
    ),
    "Conv2d": lambda: nn.Sequential(
        nn.Conv2d(1, 3, (5, 3), stride=2, padding=1), nn.Flatten(), nn.Linear(3 * 13 * 14, 10)
    ),
    "Conv2d+ReLU": lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)
    ),
    "MaxPool2d": lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3),
        nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(4 * 5 * 5, 10),
    ),
    "Flatten": lambda: nn.Sequential(
        nn.Conv2d(1, 2, 28), nn.Flatten(), nn.Tanh(), nn.Linear(2, 10)
    ),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_each_layer_type_agrees_with_onnxruntime(case, mnist_test, tmp_path):
    fastnn.seed(1)
    model = LAYER_CASES[case]()
    model.input_shape = (28, 28)
    path = tmp_path / "model.onnx"
    fastnn_onnx.export(model, path)
    assert_agrees(model, path, mnist_test[0])


def test_every_layer_type_has_an_exporter():
    registry = getattr(fastnn.model, "LAYER_TYPES", fastnn.layers.LAYER_TYPES)
    missing = sorted(set(registry) - set(fastnn_onnx.EXPORTERS))
    assert not missing, f"layers without an ONNX exporter: {missing}"


def train_briefly(model, data, epochs=1):
    x, y = data
    fastnn.Trainer(model, fastnn.optim.SGD(lr=0.05, momentum=0.9)).fit(
        x, y, epochs=epochs, batch_size=64, verbose=0
    )
    return model


@pytest.mark.parametrize("arch", ["mlp", "cnn", "lenet5"])
def test_example_architectures_agree_with_onnxruntime(
    arch, example_builders, mnist_test, mnist_train_small, tmp_path
):
    fastnn.seed(2)
    model = example_builders[arch]()
    if arch != "cnn":  # the CNN is the slowest to train: checked as initialised
        train_briefly(model, mnist_train_small)
    model.input_shape = (28, 28)
    path = tmp_path / f"{arch}.onnx"
    fastnn_onnx.export(model, path)
    x, y = mnist_test
    assert_agrees(model, path, x)
    if arch != "cnn":  # a trained model: the exported file recognizes the digits
        _, proba = run_onnx(path, x)
        assert (proba.argmax(axis=1) == y).mean() > 0.8


@pytest.mark.parametrize("arch", ["mlp", "cnn", "lenet5"])
def test_export_then_load_gives_identical_predictions(arch, example_builders, mnist_test, tmp_path):
    fastnn.seed(3)
    model = example_builders[arch]()
    model.input_shape = (28, 28)
    path = tmp_path / "model.onnx"
    fastnn_onnx.export(model, path)
    loaded = fastnn_onnx.load(path)
    x = mnist_test[0]
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    np.testing.assert_array_equal(loaded.predict_proba(x), model.predict_proba(x))
    assert loaded.input_shape == (28, 28)
    assert [type(layer) for layer in loaded] == [type(layer) for layer in model]
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value)


def test_round_trip_drops_dropout_and_keeps_the_rest(mnist_test, tmp_path):
    fastnn.seed(4)
    model = LAYER_CASES["Dropout"]()
    model.input_shape = (28, 28)
    fastnn_onnx.export(model, tmp_path / "m.onnx")
    loaded = fastnn_onnx.load(tmp_path / "m.onnx")
    assert [type(layer).__name__ for layer in loaded] == ["Flatten", "Linear", "ReLU", "Linear"]
    np.testing.assert_array_equal(
        loaded.predict_proba(mnist_test[0]), model.predict_proba(mnist_test[0])
    )


@pytest.mark.parametrize(
    "opset", [fastnn_onnx.MIN_OPSET, fastnn_onnx.DEFAULT_OPSET, fastnn_onnx.MAX_OPSET]
)
def test_file_passes_the_full_checker_with_the_lowest_ir_version(opset, mnist_test, tmp_path):
    fastnn.seed(5)
    model = LAYER_CASES["MaxPool2d"]()
    model.input_shape = (28, 28)
    path = tmp_path / "model.onnx"
    fastnn_onnx.export(model, path, opset=opset)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    opsets = [onnx.helper.make_opsetid("", opset)]
    assert proto.ir_version == onnx.helper.find_min_ir_version_for(opsets)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", opset)]
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits", "probabilities"]
    batch_axis = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_axis.dim_param and not batch_axis.HasField("dim_value")
    assert_agrees(model, path, mnist_test[0])


@pytest.mark.parametrize("batch", [1, 7, 300])
def test_any_batch_size_runs(batch, mnist_test, tmp_path):
    fastnn.seed(6)
    model = LAYER_CASES["Conv2d+ReLU"]()
    model.input_shape = (28, 28)
    fastnn_onnx.export(model, tmp_path / "m.onnx")
    assert_agrees(model, tmp_path / "m.onnx", mnist_test[0][:batch])


def test_nchw_and_flat_input_shapes(mnist_test, tmp_path):
    """A CNN given (1, 28, 28) per sample takes NCHW input; an MLP given (784,) flat rows."""
    x = mnist_test[0]
    fastnn.seed(7)
    cnn = LAYER_CASES["MaxPool2d"]()
    fastnn_onnx.export(cnn, tmp_path / "cnn.onnx", input_shape=(1, 28, 28))
    session = ort.InferenceSession(str(tmp_path / "cnn.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["N", 1, 28, 28]
    _, proba = session.run(None, {"input": x[:, None].astype(np.float32) / 255})
    np.testing.assert_allclose(proba, cnn.predict_proba(x), atol=PROBA_ATOL)
    mlp = nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    fastnn_onnx.export(mlp, tmp_path / "mlp.onnx")  # input shape known from the first Linear
    _, proba = run_onnx(tmp_path / "mlp.onnx", x.reshape(-1, 784))
    np.testing.assert_allclose(proba, mlp.predict_proba(x.reshape(-1, 784)), atol=PROBA_ATOL)


def test_float64_models_export_float32(mnist_test, tmp_path):
    fastnn.seed(8)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 16),
        nn.Tanh(),
        nn.Linear(16, 10),
        input_shape=(28, 28),
        dtype=np.float64,
    )
    fastnn_onnx.export(model, tmp_path / "m.onnx")
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert {t.data_type for t in proto.graph.initializer} == {onnx.TensorProto.FLOAT}
    _, proba = run_onnx(tmp_path / "m.onnx", mnist_test[0])
    np.testing.assert_allclose(proba, model.predict_proba(mnist_test[0]), atol=1e-5)


def test_export_arguments_are_checked(tmp_path):
    cnn = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 10))
    with pytest.raises(ValueError, match="input_shape"):
        fastnn_onnx.export(cnn, tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="layer 2"):
        fastnn_onnx.export(cnn, tmp_path / "m.onnx", input_shape=(20, 20))
    with pytest.raises(TypeError, match="model"):
        fastnn_onnx.export("model.npz", tmp_path / "m.onnx")
    mlp = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(ValueError, match="opset"):
        fastnn_onnx.export(mlp, tmp_path / "m.onnx", opset=9)
    with pytest.raises(TypeError, match="opset"):
        fastnn_onnx.export(mlp, tmp_path / "m.onnx", opset="17")
    with pytest.raises(ValueError, match="one score per class"):
        fastnn_onnx.export(
            nn.Sequential(nn.Conv2d(1, 2, 3)), tmp_path / "m.onnx", input_shape=(1, 5, 5)
        )
    assert not list(tmp_path.iterdir())  # nothing written by a refused export


def test_a_layer_without_exporter_is_named(tmp_path):
    class Square(nn.Layer):
        def forward(self, x, training=False):
            return x * x

    model = nn.Sequential(nn.Linear(4, 3), Square())
    with pytest.raises(ValueError, match=r"layer 1 .*Square"):
        fastnn_onnx.export(model, tmp_path / "m.onnx")
