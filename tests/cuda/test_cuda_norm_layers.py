"""kernels/norm.cu (batch norm, average and global average pooling, leaky ReLU) through the
cuda backend on the CuPy stand-in, against the NumPy reference at float32 tolerances, and a
BatchNorm model trained and evaluated on it."""

import numpy as np
import pytest

import fastnn
from fastnn import backends, nn

ref = backends.get("numpy")
TOL = {"rtol": 1e-4, "atol": 1e-5}


def host(backend, a):
    return np.asarray(backend.to_numpy(a))


@pytest.mark.parametrize("shape", [(5, 3), (4, 3, 5, 7), (3, 2, 1, 9)])
@pytest.mark.parametrize("relu", [False, True])
def test_batchnorm_matches_reference(fake_cuda, shape, relu):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    c = shape[1]
    gamma = rng.uniform(0.5, 1.5, c).astype(np.float32)
    beta = rng.standard_normal(c).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    stats = (np.linspace(-1, 1, c), np.linspace(0.5, 2, c))
    d = [fake_cuda.asarray(a) for a in (x, gamma, beta, dy)]
    rm, rv = fake_cuda.asarray(stats[0]), fake_cuda.asarray(stats[1])
    for training in (True, False):
        r_stats = (stats[0].copy(), stats[1].copy())
        y_ref, m_ref, s_ref = ref.batchnorm_forward(
            x, gamma, beta, *r_stats, training=training, relu=relu, momentum=0.3
        )
        y, m, s = fake_cuda.batchnorm_forward(
            d[0], d[1], d[2], rm, rv, training=training, relu=relu, momentum=0.3
        )
        np.testing.assert_allclose(host(fake_cuda, y), y_ref, **TOL)
        np.testing.assert_allclose(host(fake_cuda, rm), r_stats[0], **TOL)
        np.testing.assert_allclose(host(fake_cuda, rv), r_stats[1], **TOL)
        rm, rv = fake_cuda.asarray(stats[0]), fake_cuda.asarray(stats[1])
        if training:
            grads_ref = ref.batchnorm_backward(x, y_ref, dy, gamma, m_ref, s_ref, relu=relu)
            grads = fake_cuda.batchnorm_backward(d[0], y, d[3], d[1], m, s, relu=relu)
            for a, b in zip(grads, grads_ref):
                np.testing.assert_allclose(host(fake_cuda, a), b, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 2), (2, 1)])
def test_pooling_and_leaky_relu_match_reference(fake_cuda, kernel, stride):
    rng = np.random.default_rng(kernel)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    dx_in = fake_cuda.asarray(x)
    y = fake_cuda.avgpool2d_forward(dx_in, kernel, stride)
    np.testing.assert_allclose(host(fake_cuda, y), ref.avgpool2d_forward(x, kernel, stride), **TOL)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    np.testing.assert_allclose(
        host(
            fake_cuda, fake_cuda.avgpool2d_backward(fake_cuda.asarray(dy), x.shape, kernel, stride)
        ),
        ref.avgpool2d_backward(dy, x.shape, kernel, stride),
        **TOL,
    )
    np.testing.assert_allclose(
        host(fake_cuda, fake_cuda.global_avgpool2d_forward(dx_in)),
        ref.global_avgpool2d_forward(x),
        **TOL,
    )
    g = rng.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(
        host(fake_cuda, fake_cuda.global_avgpool2d_backward(fake_cuda.asarray(g), x.shape)),
        ref.global_avgpool2d_backward(g, x.shape),
        **TOL,
    )
    np.testing.assert_allclose(
        host(fake_cuda, fake_cuda.leaky_relu_forward(dx_in, 0.1)),
        ref.leaky_relu_forward(x, 0.1),
        **TOL,
    )
    np.testing.assert_allclose(
        host(fake_cuda, fake_cuda.leaky_relu_backward(dx_in, dx_in, 0.1)),
        ref.leaky_relu_backward(x, x, 0.1),
        **TOL,
    )


def test_batchnorm_model_trains_on_cuda_like_cpu(fake_cuda):
    (x, y), _ = fastnn.datasets.mnist()
    x, y = x[:64, ::2, ::2], y[:64]  # 14x14 keeps the harness quick
    results = []
    for backend in ("cpu", fake_cuda):
        fastnn.seed(3)
        model = nn.Sequential(
            nn.Conv2d(1, 3, 3, padding="same"),
            nn.BatchNorm2d(3),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.LeakyReLU(0.1),
            nn.GlobalAvgPool2d(),
            nn.Linear(3, 10),
        )
        trainer = fastnn.Trainer(model, fastnn.optim.SGD(lr=0.1), backend=backend)
        trainer.fit(x, y, epochs=1, batch_size=32, shuffle=False, verbose=0)
        results.append((model.state_dict(), model.predict_proba(x[:8])))
    for key, value in results[0][0].items():
        np.testing.assert_allclose(results[1][0][key], value, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-3, atol=1e-4)
