"""The compiled inference plan of a CNN (fastnn.inference.ConvPlan): the convolutions in one
call, then the Linear layers in one call. The same bits as the layers one by one, at any batch
size and thread count, following weights changed in place."""

import numpy as np
import pytest

import fastnn
from fastnn import inference, nn

conv_kernels = pytest.importorskip("fastnn._kernels.conv")


def _cnn(kind="mnist", dtype=np.float32):
    fastnn.seed(21)
    if kind == "mnist":  # direct + Winograd, both with the fused max-pool
        layers = [
            nn.Conv2d(1, 8, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 4 * 4, 24),
            nn.ReLU(),
            nn.Linear(24, 10),
        ]
        shape = (1, 28, 28)
    elif kind == "lenet":  # padding, three Linear layers
        layers = [
            nn.Conv2d(1, 6, 5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 30),
            nn.ReLU(),
            nn.Linear(30, 20),
            nn.ReLU(),
            nn.Linear(20, 10),
        ]
        shape = (1, 28, 28)
    else:  # GEMM convolutions (3x3, stride 2), a max-pool after a GEMM conv, no ReLU
        layers = [
            nn.Conv2d(3, 5, 3, padding=1),
            nn.MaxPool2d(3),
            nn.Conv2d(5, 7, 3, stride=2),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(7 * 2 * 2, 6),
        ]
        shape = (3, 20, 20)
    return nn.Sequential(*layers, input_shape=shape, dtype=dtype), shape


def _layer_outputs(model, x):
    """The outputs through the layers one by one (the path without the plan)."""
    return model.forward(model.prepare_input(x), False)


def _plan_outputs(model, x):
    model.predict(x[:1])  # builds the plan and validates the per-sample shape
    plan = model._dense_plan()
    assert isinstance(plan, inference.ConvPlan)
    return plan.outputs(np.ascontiguousarray(x.reshape(x.shape[0], -1)))


@pytest.mark.parametrize("kind", ["mnist", "lenet", "gemm"])
def test_plan_predicts_as_the_layers_bitwise(kind):
    model, shape = _cnn(kind)
    before = fastnn.get_num_threads()
    try:
        for n in (1, 2, 3, 5, 70):
            x = np.random.default_rng(n).standard_normal((n, *shape)).astype(np.float32)
            for threads in (1, 2, 3):
                fastnn.set_num_threads(threads)
                expected = _layer_outputs(model, x)
                assert _plan_outputs(model, x).tobytes() == expected.tobytes()
                np.testing.assert_array_equal(model.predict(x), expected.argmax(axis=1))
                proba = model.predict_proba(x)
                e = np.exp(expected - expected.max(axis=1, keepdims=True))
                np.testing.assert_allclose(
                    proba, e / e.sum(axis=1, keepdims=True), rtol=1e-6, atol=1e-7
                )
    finally:
        fastnn.set_num_threads(before)


def test_plan_follows_weights_changed_in_place_and_the_conv_isa():
    """Winograd's transformed weights are kept between calls: a change in place (the
    optimizer's way) or another kernel build must not reuse them."""
    model, shape = _cnn("mnist")
    x = np.random.default_rng(3).standard_normal((1, *shape)).astype(np.float32)
    assert conv_kernels.choose((1, 8, 12, 12), (16, 8, 5, 5), np.float32, 1, 0) == "winograd"
    first = _plan_outputs(model, x)
    conv2 = model.layers[3]
    kept = conv2.params[0][2, 3, 1, 1].copy()
    conv2.params[0][2, 3, 1, 1] += 0.5
    changed = _plan_outputs(model, x)
    assert changed.tobytes() == _layer_outputs(model, x).tobytes()
    assert changed.tobytes() != first.tobytes()
    conv2.params[0][2, 3, 1, 1] = kept
    assert _plan_outputs(model, x).tobytes() == first.tobytes()
    try:
        for isa in ("avx2", "portable"):
            if conv_kernels._set_isa(isa) != isa:
                continue
            assert _plan_outputs(model, x).tobytes() == _layer_outputs(model, x).tobytes()
    finally:
        conv_kernels._set_isa(None)


def test_plan_takes_uint8_images_and_refuses_nan():
    model, shape = _cnn("mnist")
    images = np.random.default_rng(8).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(
        model.predict(images), _layer_outputs(model, images).argmax(axis=1)
    )
    x = (images / np.float32(255)).astype(np.float32).reshape(4, *shape)
    model.predict(x)
    x[2, 0, 5, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.predict(x)
    with pytest.raises(ValueError):
        model.predict(np.zeros((2, 1, 20, 20), np.float32))


def test_no_conv_plan_where_the_layers_do_not_fit_it():
    fastnn.seed(5)
    batchnorm = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3),
        input_shape=(1, 8, 8),
    )
    avgpool = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 3 * 3, 3),
        input_shape=(1, 8, 8),
    )
    double, _ = _cnn("mnist", np.float64)
    for model in (batchnorm, avgpool, double):
        assert model._dense_plan() is None
        x = np.random.default_rng(6).standard_normal((2, *model.input_shape)).astype(model.dtype)
        np.testing.assert_array_equal(model.predict(x), _layer_outputs(model, x).argmax(axis=1))
