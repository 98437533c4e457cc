"""A whole Sequential against central finite differences, in float64 on the numpy backend.

Covers every layer type, fused and unfused ReLU, both losses and Dropout (with its mask held
fixed by reseeding before every forward pass, and as the identity in eval mode).
"""

import numpy as np
import pytest

import fastnn
from fastnn import losses, nn
from fastnn_testing import numeric_grad

EPS = 1e-6


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, stride=1, padding=1),
        nn.ReLU(),  # fused
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 2, stride=2, padding=1),
        nn.Tanh(),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(16, 6),
        nn.Sigmoid(),
        nn.Linear(6, 5),
        nn.ReLU(),  # fused
        nn.Linear(5, 4),
        dtype=np.float64,
        backend="numpy",
    )


def small_mlp():
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(12, 7),
        nn.Tanh(),
        nn.Dropout(0.25),
        nn.ReLU(),
        nn.Linear(7, 5),
        nn.Sigmoid(),
        nn.Linear(5, 3),
        dtype=np.float64,
        backend="numpy",
    )


def loss_and_grads(model, loss, x, y, training, mask_seed):
    fastnn.seed(mask_seed)
    out = model.forward(x, training)
    value, dout = loss(model.backend, out, y)
    return float(value), dout


def check_model(model, loss, x, y, training):
    _, dout = loss_and_grads(model, loss, x, y, True, 7)
    model.backward(dout)
    analytic = model.gradients()
    assert all(g is not None for g in analytic)

    def f():
        return loss_and_grads(model, loss, x, y, training, 7)[0]

    for (name, p), g in zip(model.named_parameters().items(), analytic):
        numeric = numeric_grad(f, p, EPS)
        np.testing.assert_allclose(g, numeric, rtol=1e-5, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("loss", [losses.CrossEntropy(), losses.MSE()], ids=["ce", "mse"])
def test_cnn_gradients_with_dropout_mask(loss):
    fastnn.seed(3)
    model = small_cnn()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 2, 6, 6))
    y = np.array([0, 3, 1])
    check_model(model, loss, x, y, training=True)


@pytest.mark.parametrize("loss", [losses.CrossEntropy(), losses.MSE()], ids=["ce", "mse"])
def test_mlp_gradients_with_dropout_mask(loss):
    fastnn.seed(4)
    model = small_mlp()
    x = np.random.default_rng(1).normal(size=(4, 3, 4))
    y = np.array([2, 0, 1, 2])
    check_model(model, loss, x, y, training=True)


def test_gradients_in_eval_mode_match_a_model_without_dropout():
    """With Dropout in eval, outputs equal the same model without the Dropout layer, and the
    gradient of that model checks out numerically."""
    fastnn.seed(5)
    model = small_mlp()
    fastnn.seed(5)
    plain = nn.Sequential(
        nn.Flatten(),
        nn.Linear(12, 7),
        nn.Tanh(),
        nn.ReLU(),
        nn.Linear(7, 5),
        nn.Sigmoid(),
        nn.Linear(5, 3),
        dtype=np.float64,
        backend="numpy",
    )
    for a, b in zip(model.parameters(), plain.parameters()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(2).normal(size=(4, 12))
    np.testing.assert_array_equal(model.forward(x, False), plain.forward(x, False))
    check_model(plain, losses.MSE(), x, np.array([0, 1, 2, 1]), training=False)


def test_mse_value_and_gradient():
    out = np.array([[0.2, 0.7, 0.1], [0.9, 0.05, 0.05]])
    y = np.array([1, 2])
    value, grad = losses.MSE()(fastnn.backends.get("numpy"), out, y)
    target = np.eye(3)[y]
    assert value == pytest.approx(((out - target) ** 2).mean())
    np.testing.assert_allclose(grad, 2 * (out - target) / out.size)
