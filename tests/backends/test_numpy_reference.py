"""The reference backend against central finite differences, in float64."""

import numpy as np
import pytest

from fastnn.backends.numpy import NumpyBackend
from fastnn_testing import numeric_grad

ref = NumpyBackend()


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("n,fin,fout", [(1, 1, 1), (3, 5, 7), (4, 7, 2)])
def test_linear_gradients(n, fin, fout, relu):
    rng = np.random.default_rng(n * 100 + fin)
    x, w, b = rng.normal(size=(n, fin)), rng.normal(size=(fout, fin)), rng.normal(size=fout)
    coef = rng.normal(size=(n, fout))
    y = ref.linear_forward(x, w, b, relu=relu)
    loss = lambda: float((ref.linear_forward(x, w, b, relu=relu) * coef).sum())
    dx, dw, db = ref.linear_backward(x, w, y, coef, relu=relu)
    for analytic, a in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(analytic, numeric_grad(loss, a), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize(
    "stride,padding,k", [(1, 0, 3), (2, 1, 3), (3, 2, 2), (1, 1, 1), (2, 0, 5)]
)
def test_conv2d_gradients(stride, padding, k, relu):
    rng = np.random.default_rng(stride * 10 + padding + k)
    x = rng.normal(size=(2, 3, 7, 6))
    w = rng.normal(size=(4, 3, k, k))
    b = rng.normal(size=4)
    coef = rng.normal(size=ref.conv2d_forward(x, w, b, stride, padding).shape)
    y = ref.conv2d_forward(x, w, b, stride, padding, relu=relu)
    loss = lambda: float((ref.conv2d_forward(x, w, b, stride, padding, relu=relu) * coef).sum())
    dx, dw, db = ref.conv2d_backward(x, w, y, coef, stride, padding, relu=relu)
    for analytic, a in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(analytic, numeric_grad(loss, a), rtol=1e-5, atol=1e-6)


def test_conv2d_matches_direct_sum():
    rng = np.random.default_rng(1)
    x, w, b = rng.normal(size=(2, 2, 5, 5)), rng.normal(size=(3, 2, 3, 3)), rng.normal(size=3)
    y = ref.conv2d_forward(x, w, b, stride=2, padding=1)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    expected = np.empty_like(y)
    for n in range(2):
        for o in range(3):
            for i in range(y.shape[2]):
                for j in range(y.shape[3]):
                    expected[n, o, i, j] = (
                        xp[n, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] * w[o]
                    ).sum() + b[o]
    np.testing.assert_allclose(y, expected, rtol=1e-12)


@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 2), (2, 1), (3, 3)])
def test_maxpool_gradients(kernel, stride):
    rng = np.random.default_rng(kernel)
    x = (
        rng.permutation(2 * 3 * 7 * 8).reshape(2, 3, 7, 8).astype(np.float64) * 0.1
    )  # distinct values
    y, argmax = ref.maxpool2d_forward(x, kernel, stride)
    coef = rng.normal(size=y.shape)
    loss = lambda: float((ref.maxpool2d_forward(x, kernel, stride)[0] * coef).sum())
    dx = ref.maxpool2d_backward(coef, argmax, x.shape, kernel, stride)
    np.testing.assert_allclose(dx, numeric_grad(loss, x, eps=1e-4), rtol=1e-6, atol=1e-8)


def test_maxpool_ties_pick_first_in_window():
    x = np.zeros((1, 1, 4, 4))
    y, argmax = ref.maxpool2d_forward(x, 2)
    assert argmax.ravel().tolist() == [0, 2, 8, 10]


@pytest.mark.parametrize("n,c", [(1, 1), (1, 10), (5, 3), (7, 11)])
def test_softmax_cross_entropy_gradient(n, c):
    rng = np.random.default_rng(n + c)
    logits, labels = rng.normal(size=(n, c)) * 3, rng.integers(0, c, size=n)
    loss, dlogits = ref.softmax_cross_entropy(logits, labels)
    f = lambda: float(ref.softmax_cross_entropy(logits, labels)[0])
    np.testing.assert_allclose(dlogits, numeric_grad(f, logits), rtol=1e-6, atol=1e-9)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(loss, -np.log(probs[np.arange(n), labels]).mean(), rtol=1e-12)


def test_softmax_cross_entropy_extreme_logits_stay_finite():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype=np.float32)
    loss, d = ref.softmax_cross_entropy(logits, np.array([1, 2]))
    assert np.isfinite(loss) and np.isfinite(d).all()
    assert loss == pytest.approx((2e4 + np.log(3)) / 2, rel=1e-6)


def test_sgd_matches_pytorch_formulas():
    p, g, v = np.array([1.0, -2.0]), np.array([0.5, 0.25]), np.array([0.1, 0.2])
    ref.sgd_step(p, g, v, lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=True)
    g_wd = np.array([0.5, 0.25]) + 0.01 * np.array([1.0, -2.0])
    v_expected = 0.9 * np.array([0.1, 0.2]) + g_wd
    np.testing.assert_allclose(v, v_expected)
    np.testing.assert_allclose(p, np.array([1.0, -2.0]) - 0.1 * (g_wd + 0.9 * v_expected))


def test_adam_first_step_moves_by_lr():
    p, g = np.array([1.0, -2.0, 3.0]), np.array([0.5, -0.25, 4.0])
    m, v = np.zeros(3), np.zeros(3)
    ref.adam_step(p, g, m, v, lr=0.01, step=1)
    # with bias correction, the first step is lr * sign(g) (up to eps)
    np.testing.assert_allclose(p, np.array([1.0, -2.0, 3.0]) - 0.01 * np.sign(g), rtol=1e-6)
