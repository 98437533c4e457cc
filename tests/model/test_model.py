"""Sequential building (fusion, initializers, shapes, summary), layers, optimizers, schedules."""

import io
import math

import numpy as np
import pytest

import fastnn
from fastnn import nn, optim


def test_public_names():
    for name in (
        "Linear",
        "Conv2d",
        "MaxPool2d",
        "Flatten",
        "ReLU",
        "Sigmoid",
        "Tanh",
        "Dropout",
        "Sequential",
    ):
        assert hasattr(nn, name)
    for name in ("SGD", "Adam", "StepLR", "CosineLR"):
        assert hasattr(optim, name)
    for name in ("seed", "Trainer", "load", "datasets", "History", "NonFiniteLossError"):
        assert hasattr(fastnn, name)


def test_linear_relu_and_conv_relu_are_fused():
    # numpy: no fused conv + max-pool kernel (cpu's is tested in test_model_fusion.py)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8, 4),
        nn.ReLU(),
        nn.Linear(4, 3),
        nn.Sigmoid(),
        backend="numpy",
    )
    conv, _, pool, relu2, flat, lin1, _, lin2, _ = model.layers
    steps = {step.layer: step for step in model.plan.steps}
    assert steps[conv].relu and steps[lin1].relu and not steps[lin2].relu
    assert list(steps) == [conv, pool, relu2, flat, lin1, lin2, model.layers[8]]
    assert [r["fused"] for r in model.describe((1, 6, 6))] == [
        False,
        True,
        False,
        False,
        False,
        False,
        True,
        False,
        False,
    ]
    # the first layer with parameters does not need its input gradient; later ones do
    assert not steps[conv].need_dx and steps[lin1].need_dx and steps[lin2].need_dx
    # the plan is the model's: the user's layers hold configuration and parameters only
    assert not any(
        hasattr(layer, name)
        for layer in model.layers
        for name in ("relu", "pool", "need_dx", "reuse", "folded")
    )


def test_fused_forward_equals_unfused():
    fastnn.seed(0)
    fused = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3), backend="numpy")
    x = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)
    w1, b1, w2, b2 = fused.parameters()
    expected = np.maximum(x @ w1.T + b1, 0) @ w2.T + b2
    np.testing.assert_allclose(fused.forward(x, False), expected, rtol=1e-6, atol=1e-6)


def test_initializers_he_before_relu_glorot_otherwise():
    fastnn.seed(0)
    model = nn.Sequential(
        nn.Flatten(),
        nn.Linear(400, 300),
        nn.ReLU(),
        nn.Linear(300, 200),
        nn.Tanh(),
        nn.Linear(200, 100),
        nn.Dropout(),
        nn.Sigmoid(),
        nn.Linear(100, 10),
        backend="numpy",
    )
    w1, w2, w3, w4 = (model.layers[i].weight for i in (1, 3, 5, 8))
    # uniform(-a, a) has std a / sqrt(3)
    np.testing.assert_allclose(w1.std(), math.sqrt(6 / 400) / math.sqrt(3), rtol=0.02)
    np.testing.assert_allclose(w2.std(), math.sqrt(6 / 500) / math.sqrt(3), rtol=0.02)
    np.testing.assert_allclose(w3.std(), math.sqrt(6 / 300) / math.sqrt(3), rtol=0.03)
    assert np.abs(w4).max() <= math.sqrt(6 / 110)
    assert all(not b.any() for b in (model.layers[i].bias for i in (1, 3, 5, 8)))
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_conv_pool_relu_gets_he_and_explicit_init_wins():
    fastnn.seed(0)
    model = nn.Sequential(
        nn.Conv2d(8, 64, 3),
        nn.MaxPool2d(2),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3, init="glorot"),
        nn.ReLU(),
        backend="numpy",
    )
    np.testing.assert_allclose(model[0].weight.std(), math.sqrt(6 / 72) / math.sqrt(3), rtol=0.03)
    np.testing.assert_allclose(
        model[3].weight.std(), math.sqrt(6 / (2 * 576)) / math.sqrt(3), rtol=0.03
    )


def test_same_seed_same_weights_float32_and_float64():
    def build(dtype):
        fastnn.seed(123)
        return nn.Sequential(
            nn.Conv2d(1, 3, 3),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(12, 2),
            dtype=dtype,
            backend="numpy",
        )

    a, b, c = build(np.float32), build(np.float32), build(np.float64)
    for pa, pb, pc in zip(a.parameters(), b.parameters(), c.parameters()):
        assert pa.tobytes() == pb.tobytes()
        np.testing.assert_array_equal(pa, pc.astype(np.float32))
    fastnn.seed(0)
    first = nn.Sequential(nn.Linear(3, 3), backend="numpy")
    second = nn.Sequential(nn.Linear(3, 3), backend="numpy")  # the stream moves on
    assert not np.array_equal(first[0].weight, second[0].weight)


def test_summary_shapes_params_and_flops():
    model = nn.Sequential(
        nn.Conv2d(1, 32, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(1024, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
        backend="numpy",
    )
    rows = model.describe((28, 28))  # (H, W) is taken as one channel
    assert [r["output_shape"] for r in rows] == [
        (32, 24, 24),
        (32, 24, 24),
        (32, 12, 12),
        (64, 8, 8),
        (64, 8, 8),
        (64, 4, 4),
        (1024,),
        (128,),
        (128,),
        (10,),
    ]
    assert [r["params"] for r in rows] == [832, 0, 0, 51264, 0, 0, 0, 131200, 0, 1290]
    assert rows[0]["flops"] == (2 * 25 + 1) * 32 * 24 * 24
    assert rows[7]["flops"] == 2 * 1024 * 128 + 128
    assert model.param_count() == 832 + 51264 + 131200 + 1290
    out = io.StringIO()
    model.summary((1, 28, 28), file=out)
    text = out.getvalue()
    assert "(64, 4, 4)" in text and "184,586" in text and "fused" in text
    with pytest.raises(ValueError, match="input shape is unknown"):
        model.summary()
    with pytest.raises(ValueError, match="layer 7"):
        model.describe((1, 32, 32))


def test_mlp_summary_infers_input_from_first_linear():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), backend="numpy")
    assert model.describe()[-1]["output_shape"] == (10,)


def test_predict_accepts_uint8_images_for_cnn():
    fastnn.seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3), backend="numpy"
    )
    x = np.random.default_rng(0).integers(0, 256, (5, 6, 6), dtype=np.uint8)
    proba = model.predict_proba(x)
    assert proba.shape == (5, 3) and np.allclose(proba.sum(axis=1), 1)
    np.testing.assert_array_equal(model.predict(x), proba.argmax(axis=1))
    np.testing.assert_array_equal(model.predict(x, batch_size=2), model.predict(x))
    logits = model.forward(x.astype(np.float32)[:, None] / 255, False)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(proba, e / e.sum(axis=1, keepdims=True), rtol=1e-6)
    with pytest.raises(ValueError, match="does not fit"):
        model.predict(np.zeros((2, 5, 5), np.uint8))


def test_to_dtype_and_backend_moves_parameters():
    fastnn.seed(0)
    model = nn.Sequential(nn.Linear(3, 2), backend="numpy")
    w = model[0].weight.copy()
    model.to("numpy", dtype="float64")
    assert model.dtype == np.float64 and model[0].weight.dtype == np.float64
    np.testing.assert_array_equal(model[0].weight, w.astype(np.float64))
    with pytest.raises(TypeError):
        model.to(dtype=np.int32)


def test_dropout_train_and_eval():
    fastnn.seed(0)
    layer = nn.Dropout(0.25)
    x = np.ones((200, 50), np.float32)
    y = layer.forward(x, training=True)
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    np.testing.assert_array_equal(layer.backward(x), y)
    assert layer.forward(x, training=False) is x
    with pytest.raises(ValueError):
        nn.Dropout(1.0)


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: nn.Linear(0, 3), ValueError),
        (lambda: nn.Linear(3.0, 3), TypeError),
        (lambda: nn.Conv2d(1, 2, 0), ValueError),
        (lambda: nn.Conv2d(1, 2, 3, padding=-1), ValueError),
        (lambda: nn.Conv2d(1, 2, (3, 3, 3)), ValueError),
        (lambda: nn.MaxPool2d(0), ValueError),
        (lambda: nn.Linear(2, 2, init="orthogonal"), ValueError),
        (lambda: nn.Sequential(), ValueError),
        (lambda: nn.Sequential(nn.Linear(2, 2), "relu"), TypeError),
        (lambda: (lambda r: nn.Sequential(r, r))(nn.ReLU()), ValueError),
        (lambda: nn.Sequential(nn.Linear(2, 2), dtype="float16"), TypeError),
    ],
)
def test_bad_layer_arguments(make, error):
    with pytest.raises(error):
        make()


def test_state_dict_round_trip_and_checks():
    fastnn.seed(0)
    a = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), backend="numpy")
    b = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), backend="numpy")
    state = a.state_dict()
    assert list(state) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    b.load_state_dict(state)
    for x, y in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({"0.weight": state["0.weight"]})
    with pytest.raises(ValueError, match="shape"):
        b.load_state_dict({**state, "0.bias": np.zeros(5, np.float32)})
    with pytest.raises(ValueError, match="float32"):
        b.load_state_dict({**state, "0.bias": np.zeros(4, np.float64)})


def attached(opt, seed=0):
    fastnn.seed(seed)
    model = nn.Sequential(nn.Linear(3, 2), backend="numpy")
    opt.attach(model)
    return model


def fake_step(model, opt, grads):
    for layer in model.layers:
        layer.grads = [g.copy() for g in grads]
    opt.step()


def test_sgd_nesterov_weight_decay_matches_formula():
    opt = optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    model = attached(opt)
    w0 = model[0].weight.astype(np.float64)
    g = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    v = np.zeros_like(w0)
    w = w0.copy()
    for _ in range(3):
        fake_step(model, opt, [g, np.zeros(2, np.float32)])
        d = g + 0.01 * w
        v = 0.9 * v + d
        w = w - 0.1 * (d + 0.9 * v)
    np.testing.assert_allclose(model[0].weight, w, rtol=1e-5)
    assert opt.steps == 3


def test_optimizer_state_dict_round_trip():
    grads = [np.full((2, 3), 0.5, np.float32), np.ones(2, np.float32)]
    for make in (lambda: optim.SGD(lr=0.1, momentum=0.9), lambda: optim.Adam(lr=0.01)):
        opt = make()
        model = attached(opt)
        for _ in range(3):
            fake_step(model, opt, grads)
        state = opt.state_dict()
        assert state["steps"] == 3 and set(state["state"]) == {"0.weight", "0.bias"}
        weights = model.state_dict()
        # continue the original; and a fresh optimizer restored from state on a copy
        fake_step(model, opt, grads)
        opt2 = make()
        opt2.load_state_dict(state)
        model2 = attached(opt2)
        model2.load_state_dict(weights)
        opt2.attach(model2)
        fake_step(model2, opt2, grads)
        for p1, p2 in zip(model.parameters(), model2.parameters()):
            np.testing.assert_array_equal(p1, p2)
        assert opt2.steps == 4
    with pytest.raises(ValueError, match="not SGD"):
        optim.SGD(lr=0.1).load_state_dict(optim.Adam().state_dict())
    bad = optim.SGD(lr=0.1, momentum=0.9)
    attached(bad)
    state = bad.state_dict()
    state["state"]["0.weight"]["velocity"] = np.zeros((3, 3))
    with pytest.raises(ValueError, match="shape"):
        bad.load_state_dict(state)


def test_schedules():
    step = optim.StepLR(step_size=2, gamma=0.5)
    assert [step(e) for e in (0, 1.9, 2, 4.5)] == [1, 1, 0.5, 0.25]
    cos = optim.CosineLR(epochs=10, min_factor=0.1)
    assert cos(0) == 1 and cos(10) == pytest.approx(0.1) and cos(20) == pytest.approx(0.1)
    assert cos(5) == pytest.approx(0.55)
    warm = optim.CosineLR(epochs=10, warmup=2)
    assert warm(0) == pytest.approx(0.01) and warm(1) == pytest.approx(0.505) and warm(2) == 1
    opt = optim.SGD(lr=0.2, schedule=step)
    opt.set_epoch(3.0)
    assert opt.lr == pytest.approx(0.1) and opt.base_lr == 0.2
    with pytest.raises(ValueError):
        optim.CosineLR(epochs=2, warmup=2)
    with pytest.raises(ValueError):
        optim.StepLR(0)
