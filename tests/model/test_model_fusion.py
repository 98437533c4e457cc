"""Sequential runs Conv2d (+ ReLU) + MaxPool2d as one fused kernel on cpu: the same bits as the
layers run one by one, in every mode, shape and dtype, with nothing allocated per step."""

import io
import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import nn, optim
from fastnn.plan import ConvPoolStep

pytest.importorskip("fastnn._kernels.conv")
from fastnn.backends.cpu import CpuBackend  # noqa: E402


class Unfused(CpuBackend):
    """The cpu backend declaring no fused conv + max-pool: the plan then runs the layers one
    by one, through the same cpu kernels."""

    fuses_conv2d_maxpool = False


def run_layers(model):
    """The first layer of each step of the model's plan (the layers that execute)."""
    return [s.layer for s in model.plan.steps]


def pooled(model):
    """{conv layer: the pool layer its step runs}, for the convs planned with their pool."""
    return {s.layer: s.pool for s in model.plan.steps if isinstance(s, ConvPoolStep)}


def fused_steps(model):
    return [s._fused_step for s in model.plan.steps if isinstance(s, ConvPoolStep)]


def lenet(**kw):
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
        **kw,
    )


def cnn(**kw):
    return nn.Sequential(
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
        **kw,
    )


def odd(**kw):
    """Pools that floor (odd conv outputs), a conv pooled without ReLU, pool 3, a stride-2 conv
    (no fused kernel takes it) and a pool with stride != kernel (never fused)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.MaxPool2d(2),  # 13x15 -> 11x13 -> 5x6
        nn.Conv2d(4, 8, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3),  # 5x6 -> 1x2
        nn.Flatten(),
        nn.Linear(16, 3),
        **kw,
    )


def strided(**kw):
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=2),
        nn.ReLU(),
        nn.MaxPool2d(2),  # 15x15 -> 7x7 -> 3x3
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2, stride=1),
        nn.Flatten(),
        nn.Linear(6 * 2 * 2, 3),
        **kw,
    )


MODELS = {
    "lenet5": (lenet, (28, 28)),
    "cnn": (cnn, (28, 28)),
    "odd": (odd, (13, 15)),
    "strided": (strided, (15, 15)),
}


def pair(make, dtype=np.float32):
    """The same weights, fused (cpu) and layer by layer (cpu kernels, no fused ones)."""
    fastnn.seed(0)
    fused = make(backend="cpu", dtype=dtype)
    plain = make(backend=Unfused(), dtype=dtype)
    plain.load_state_dict(fused.state_dict())
    return fused, plain


def batch(shape, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, 10, n) % 3


def step(model, x, y):
    out = model.forward(model.prepare_input(x), True)
    _, dout = fastnn.losses.get("cross_entropy")(model.backend, out, y)
    model.backward(dout)
    return out.copy(), [g.copy() for g in model.gradients()]


def assert_same(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b), f"max difference {np.abs(a - b).max()}"


@pytest.mark.parametrize("reuse", [False, True], ids=["fresh", "reuse"])
@pytest.mark.parametrize("n", [16, 1, 5])
@pytest.mark.parametrize("arch", MODELS)
def test_same_bits_as_layer_by_layer(arch, n, reuse):
    make, shape = MODELS[arch]
    fused, plain = pair(make)
    for model in (fused, plain):
        model.set_reuse(reuse)
    for seed in range(2):  # a second step: kept buffers are rewritten, not stale
        x, y = batch(shape, n, seed)
        out_f, grads_f = step(fused, x, y)
        out_p, grads_p = step(plain, x, y)
        assert_same(out_f, out_p)
        for gf, gp in zip(grads_f, grads_p):
            assert_same(gf, gp)
        assert_same(
            fused.forward(fused.prepare_input(x), False),
            plain.forward(plain.prepare_input(x), False),
        )


@pytest.mark.parametrize("arch", ["lenet5", "cnn"])
def test_mnist_shapes_run_the_fused_kernel(arch):
    make, shape = MODELS[arch]
    model = make()
    convs = [layer for layer in model.layers if isinstance(layer, nn.Conv2d)]
    assert run_layers(model)[:2] == convs and list(pooled(model)) == convs
    step(model, *batch(shape, 16))
    assert fused_steps(model) == [True, True]  # one kernel each, not the fallback


def test_stride_two_conv_falls_back_and_unequal_stride_pool_is_not_fused():
    model = strided()
    conv1, _, pool1, conv2, _, pool2 = model.layers[:6]
    assert pooled(model) == {conv1: pool1} and pool2 in run_layers(model)
    step(model, *batch((15, 15), 4))
    assert fused_steps(model) == [False]  # stride 2: the two kernels, inside the conv's step


def test_float64_falls_back_with_the_same_bits():
    fused, plain = pair(lenet, np.float64)
    assert pooled(fused)[fused.layers[0]] is fused.layers[2]
    x, y = batch((28, 28), 3)
    (out_f, grads_f), (out_p, grads_p) = step(fused, x, y), step(plain, x, y)
    assert fused_steps(fused)[0] is False
    assert_same(out_f, out_p)
    for gf, gp in zip(grads_f, grads_p):
        assert_same(gf, gp)


def test_training_with_the_trainer_gives_the_same_weights():
    x, y = batch((28, 28), 70)  # a last batch of 6: kept buffers' head rows
    results = []
    for backend in ("cpu", Unfused()):
        fastnn.seed(0)
        trainer = fastnn.Trainer(lenet(), optim.SGD(lr=0.05, momentum=0.9), backend=backend)
        trainer.fit(x, y, epochs=2, batch_size=16, verbose=0)
        results.append(trainer.model.state_dict())
    for name in results[0]:
        assert_same(results[0][name], results[1][name])


def test_numpy_backend_and_moving_between_backends():
    model = lenet(backend="numpy")
    assert pooled(model) == {}
    assert model.layers[2] in run_layers(model) and model.layers[5] in run_layers(model)
    model.to("cpu")
    assert pooled(model)[model.layers[0]] is model.layers[2]
    assert model.layers[2] not in run_layers(model)
    model.to("numpy")
    assert pooled(model) == {} and model.layers[2] in run_layers(model)


def test_summary_shows_the_pool_fused():
    model = lenet()
    assert [r["fused"] for r in model.describe((28, 28))] == [
        False,
        True,
        True,
        False,
        True,
        True,
        False,
        False,
        True,
        False,
        True,
        False,
    ]
    out = io.StringIO()
    model.summary((28, 28), file=out)
    assert "MaxPool2d(kernel_size=2)  (fused into previous)  (6, 14, 14)" in out.getvalue()
    # the architecture itself is unchanged: every layer is still there
    assert len(model) == 12 and model.output_shape((1, 28, 28)) == (10,)


def test_save_load_round_trip(tmp_path):
    fastnn.seed(0)
    model = cnn()
    x = model.prepare_input(batch((28, 28), 8)[0])
    expected = model.forward(x, False)
    model.save(tmp_path / "cnn.npz")
    loaded = fastnn.load(tmp_path / "cnn.npz")
    assert loaded.config() == model.config()
    assert pooled(loaded)[loaded.layers[0]] is loaded.layers[2]
    assert run_layers(loaded)[:2] == loaded.layers[0:4:3]
    assert_same(loaded.forward(x, False), expected)


def test_a_training_step_allocates_nothing():
    fastnn.seed(0)
    model = cnn().set_reuse(True)
    x, y = batch((28, 28), 16)
    xb = model.prepare_input(x)
    loss = fastnn.losses.get("cross_entropy")
    for _ in range(2):  # warm up: the kept buffers are made
        model.backward(loss(model.backend, model.forward(xb, True), y)[1])
    out = model.forward(xb, True)
    _, dout = loss(model.backend, out, y)
    tracemalloc.start()
    try:
        model.forward(xb, True)
        model.backward(dout)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the first conv's pooled output alone is 16 * 32 * 12 * 12 * 4 = 295 KB
    assert peak < 32 * 1024, peak
    assert fused_steps(model)[0]


def test_profile_shows_one_row_per_fused_conv():
    fastnn.seed(0)
    model = lenet()
    x, y = batch((28, 28), 32)
    report = fastnn.profile(model, x, y, batch_size=16, steps=1, warmup=1, print_table=False)
    names = [r["name"] for r in report.rows]
    assert names[:3] == [
        "Conv2d(1, 6, kernel_size=5, padding=2)+ReLU+MaxPool2d(kernel_size=2)",
        "Conv2d(6, 16, kernel_size=5)+ReLU+MaxPool2d(kernel_size=2)",
        "Flatten()",
    ]
    assert [r["output_shape"] for r in report.rows[:3]] == [(6, 14, 14), (16, 5, 5), (400,)]
    conv1 = report.rows[0]
    # the convolution's FLOPs, as for a fused ReLU: (2 * 25 + 1) per output, 16 samples
    flops = (2 * 25 + 1) * 6 * 28 * 28 * 16
    assert conv1["forward_gflops"] == pytest.approx(flops / conv1["forward_ms"] / 1e6)
    assert conv1["backward_ms"] > 0 and conv1["backward_gflops"] > 0


def test_bad_input_gets_the_kernels_clear_error():
    model = lenet()
    with pytest.raises(ValueError, match="x"):
        model.forward(np.zeros((2, 28, 28), np.float32), True)  # no channel axis
    with pytest.raises((TypeError, ValueError), match="dtype|float"):
        model.forward(np.zeros((2, 1, 28, 28), np.float64), True)
