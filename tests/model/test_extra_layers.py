"""BatchNorm1d/2d, AvgPool2d, GlobalAvgPool2d, LeakyReLU and Conv2d(padding="same") inside a
model: gradients by finite differences (numpy, float64), cpu against numpy, evaluation with
the batch norms folded into the layer before them, saving and loading the running
statistics, bad arguments."""

import numpy as np
import pytest

import fastnn
from fastnn import backends, nn

HAS_CPU = bool(backends.available()["cpu"])
BACKENDS = ["numpy"] + (["cpu"] if HAS_CPU else [])


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding="same"),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4, momentum=0.2),
        nn.LeakyReLU(0.1),
        nn.AvgPool2d(2, stride=1),
        nn.Conv2d(4, 5, 1),
        nn.GlobalAvgPool2d(),
        nn.Linear(5, 6),
        nn.BatchNorm1d(6, eps=1e-3),
        nn.ReLU(),
        nn.Linear(6, 3),
    )


def data(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 10, 10)), rng.integers(0, 3, n)


def loss_and_grads(model, x, y):
    out = model.forward(x, True)
    loss, dout = model.backend.softmax_cross_entropy(out, y)
    model.backward(dout)
    return float(loss), [np.array(model.backend.to_numpy(g)) for g in model.gradients()]


def test_model_gradients_match_finite_differences():
    fastnn.seed(1)
    model = small_cnn().to("numpy", np.float64)
    x_raw, y = data()
    x = model.prepare_input(x_raw)
    _, grads = loss_and_grads(model, x, y)
    eps = 1e-6
    for param, grad in zip(model.parameters(), grads):
        flat = param.reshape(-1)
        for k in np.random.default_rng(2).choice(flat.size, min(flat.size, 6), replace=False):
            old = flat[k]
            flat[k] = old + eps
            up = float(model.backend.softmax_cross_entropy(model.forward(x, True), y)[0])
            flat[k] = old - eps
            down = float(model.backend.softmax_cross_entropy(model.forward(x, True), y)[0])
            flat[k] = old
            assert grad.reshape(-1)[k] == pytest.approx((up - down) / (2 * eps), rel=1e-4, abs=1e-7)


@pytest.mark.skipif(not HAS_CPU, reason="compiled kernels not built")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_model_matches_numpy_model(dtype):
    x_raw, y = data(9, seed=3)
    results = []
    for name in ("numpy", "cpu"):
        fastnn.seed(4)
        model = small_cnn().to(name, dtype)
        x = model.prepare_input(x_raw)
        loss, grads = loss_and_grads(model, x, y)
        state = model.state_dict()
        results.append((loss, grads, state, model.predict_proba(x_raw)))
    tol = 2e-4 if dtype == np.float32 else 1e-9
    assert results[0][0] == pytest.approx(results[1][0], rel=tol)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    for name in results[0][2]:  # running statistics moved the same way
        np.testing.assert_allclose(results[0][2][name], results[1][2][name], rtol=tol, atol=tol)
    np.testing.assert_allclose(results[0][3], results[1][3], rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
def test_folded_evaluation_equals_batchnorm_evaluation(backend):
    fastnn.seed(5)
    model = small_cnn().to(backend, np.float64)
    x_raw, y = data(8, seed=6)
    x = model.prepare_input(x_raw)
    for _ in range(3):  # move the running statistics away from 0 and 1
        loss_and_grads(model, x, y)
    folds = [step.fold for step in model.plan.eval_steps if getattr(step, "fold", None)]
    assert folds == [model[1], model[5], model[11]]
    folded = model.forward(x, False)
    # the training steps in evaluation mode: each batch norm runs on its own, no folding
    h = x
    for step in model.plan.steps:
        h = step.forward(h, False)
    np.testing.assert_allclose(folded, h, rtol=1e-10, atol=1e-12)
    # evaluation does not touch the running statistics
    before = model.state_dict()
    model.predict(x_raw)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_save_and_load_keep_running_statistics(tmp_path):
    fastnn.seed(7)
    model = small_cnn()
    x_raw, y = data(8)
    loss_and_grads(model, model.prepare_input(x_raw), y)
    names = model.state_dict()
    assert "1.running_mean" in names and names["1.running_var"].dtype == np.float64
    assert not np.allclose(names["1.running_mean"], 0)
    path = tmp_path / "bn.npz"
    model.save(path)
    loaded = fastnn.load(path)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[key], value)
    np.testing.assert_array_equal(loaded.predict_proba(x_raw), model.predict_proba(x_raw))
    assert repr(loaded[0]) == "Conv2d(1, 3, kernel_size=3, padding='same')"
    # the optimizer only trains weight and bias, never the running statistics
    assert "1.running_mean" not in {slot.name for slot in model.parameter_slots()}


def test_trainer_fits_batchnorm_model_and_checkpoints(tmp_path):
    (x, y), _ = fastnn.datasets.mnist()
    fastnn.seed(8)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 5),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(576, 10),
    )
    trainer = fastnn.Trainer(model, fastnn.optim.AdamW(lr=0.01), backend=BACKENDS[-1])
    history = trainer.fit(
        x[:600], y[:600], epochs=2, batch_size=50, verbose=0, checkpoint=tmp_path / "ck.npz"
    )
    assert history["loss"][1] < history["loss"][0]
    assert trainer.evaluate(x[:600], y[:600])["accuracy"] > 0.5


def test_padding_same_and_bad_arguments():
    conv = nn.Conv2d(2, 3, 5, padding="same")
    assert conv.padding == 2 and conv.output_shape((2, 9, 7)) == (3, 9, 7)
    with pytest.raises(ValueError, match="odd square kernel"):
        nn.Conv2d(2, 3, 4, padding="same")
    with pytest.raises(ValueError, match="stride 1"):
        nn.Conv2d(2, 3, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="padding must be an int or 'same'"):
        nn.Conv2d(2, 3, 3, padding="valid")
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm2d(0)
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm1d(3, momentum=2)
    with pytest.raises(ValueError, match="eps"):
        nn.BatchNorm1d(3, eps=0)
    with pytest.raises(TypeError, match="affine"):
        nn.BatchNorm1d(3, affine=1)
    with pytest.raises(ValueError, match="negative_slope"):
        nn.LeakyReLU(-1)
    with pytest.raises(ValueError, match="BatchNorm2d"):
        nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(4)).output_shape((1, 8, 8))
    with pytest.raises(ValueError, match="BatchNorm1d"):
        nn.Sequential(nn.Flatten(), nn.BatchNorm1d(4)).output_shape((1, 2, 3))


def test_batchnorm_without_affine_has_no_trainable_parameters():
    fastnn.seed(9)
    model = nn.Sequential(
        nn.Flatten(), nn.Linear(4, 3), nn.BatchNorm1d(3, affine=False), nn.Linear(3, 2)
    )
    assert [slot.name for slot in model.parameter_slots()] == [
        "1.weight",
        "1.bias",
        "3.weight",
        "3.bias",
    ]
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    out = model.forward(model.prepare_input(x), True)
    model.backward(np.ones_like(out))
    assert model.gradients()[0] is not None


def test_onnx_export_runs_the_new_layers_as_fastnn_does(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    fastnn_onnx = pytest.importorskip("fastnn.onnx")
    fastnn.seed(10)
    model = small_cnn()
    model.input_shape = (10, 10)
    x_raw, y = data(6, seed=11)
    x = model.prepare_input(x_raw.astype(np.float32))
    loss_and_grads(model, x, y)  # running statistics away from 0 and 1
    path = tmp_path / "bn.onnx"
    fastnn_onnx.export(model, path)
    session = ort.InferenceSession(str(path))
    name = session.get_inputs()[0].name
    feed = x if len(session.get_inputs()[0].shape) == 4 else x_raw.astype(np.float32)
    got = session.run(None, {name: feed})[0]
    np.testing.assert_allclose(got, model.forward(x, False), rtol=1e-4, atol=1e-5)
