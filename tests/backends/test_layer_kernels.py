"""The batch-norm, average-pooling, leaky-ReLU, label-smoothing and affine-gather kernels:
the NumPy reference by float64 finite differences, cpu against the reference at float32
tolerances on odd shapes, bad input, and the same bits at 1, 2 and 3 threads."""

import numpy as np
import pytest

import fastnn
from fastnn import backends

ref = backends.get("numpy")
cpu = backends.get("cpu") if backends.available()["cpu"] else None
needs_cpu = pytest.mark.skipif(cpu is None, reason="compiled kernels not built")
BN_SHAPES = [(5, 3), (4, 3, 5, 7), (2, 1, 1, 3), (33, 17)]


def numeric_grad(f, a, eps=1e-6):
    g = np.zeros_like(a)
    it = np.nditer(a, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = a[i]
        a[i] = old + eps
        up = f()
        a[i] = old - eps
        down = f()
        a[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


def bn_inputs(shape, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, c).astype(dtype)
    beta = rng.standard_normal(c).astype(dtype)
    return x, gamma, beta


# ---- reference: finite differences in float64 --------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 3, 4)])
@pytest.mark.parametrize("relu", [False, True])
def test_reference_batchnorm_gradients(shape, relu):
    x, gamma, beta = bn_inputs(shape)
    r = np.random.default_rng(1).standard_normal(shape)

    def loss():
        y, _, _ = ref.batchnorm_forward(
            x, gamma, beta, np.zeros(shape[1]), np.ones(shape[1]), training=True, relu=relu
        )
        return float((y * r).sum())

    y, mean, inv_std = ref.batchnorm_forward(
        x, gamma, beta, np.zeros(shape[1]), np.ones(shape[1]), training=True, relu=relu
    )
    dx, dgamma, dbeta = ref.batchnorm_backward(x, y, r, gamma, mean, inv_std, relu=relu)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dgamma, numeric_grad(loss, gamma), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(dbeta, numeric_grad(loss, beta), rtol=1e-5, atol=1e-7)


def test_reference_batchnorm_statistics_match_definition():
    x, gamma, beta = bn_inputs((6, 2, 3, 3))
    rm, rv = np.full(2, 0.5), np.full(2, 2.0)
    y, mean, inv_std = ref.batchnorm_forward(
        x, gamma, beta, rm, rv, training=True, momentum=0.25, eps=1e-3
    )
    np.testing.assert_allclose(mean, x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(inv_std, 1 / np.sqrt(x.var(axis=(0, 2, 3)) + 1e-3))
    np.testing.assert_allclose(rm, 0.75 * 0.5 + 0.25 * x.mean(axis=(0, 2, 3)))
    np.testing.assert_allclose(rv, 0.75 * 2.0 + 0.25 * x.var(axis=(0, 2, 3), ddof=1))
    # per channel the output has mean beta and standard deviation ~gamma
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), beta, atol=1e-12)
    # eval mode uses the running statistics and leaves them alone
    before = rm.copy(), rv.copy()
    y_eval, _, _ = ref.batchnorm_forward(x, gamma, beta, rm, rv, training=False, eps=1e-3)
    np.testing.assert_array_equal(rm, before[0])
    expected = (x - rm[None, :, None, None]) / np.sqrt(rv + 1e-3)[None, :, None, None] * gamma[
        None, :, None, None
    ] + beta[None, :, None, None]
    np.testing.assert_allclose(y_eval, expected)


@pytest.mark.parametrize("kernel,stride", [(2, None), (3, 2), (2, 1)])
def test_reference_avgpool_gradient(kernel, stride):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 7, 6))
    r = rng.standard_normal(ref.avgpool2d_forward(x, kernel, stride).shape)
    dx = ref.avgpool2d_backward(r, x.shape, kernel, stride)
    np.testing.assert_allclose(
        dx,
        numeric_grad(lambda: float((ref.avgpool2d_forward(x, kernel, stride) * r).sum()), x),
        rtol=1e-6,
        atol=1e-8,
    )
    np.testing.assert_allclose(ref.avgpool2d_forward(x, 2)[0, 0, 0, 0], x[0, 0, :2, :2].mean())


def test_reference_global_avgpool_and_leaky_relu_gradients():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 5, 3))
    r = rng.standard_normal((3, 4))
    np.testing.assert_allclose(
        ref.global_avgpool2d_backward(r, x.shape),
        numeric_grad(lambda: float((ref.global_avgpool2d_forward(x) * r).sum()), x),
        atol=1e-8,
    )
    x = rng.standard_normal((4, 7)) + 0.01  # keep away from the kink
    r = rng.standard_normal((4, 7))
    np.testing.assert_allclose(
        ref.leaky_relu_backward(x, r, 0.2),
        numeric_grad(lambda: float((ref.leaky_relu_forward(x, 0.2) * r).sum()), x),
        atol=1e-8,
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_reference_smoothed_cross_entropy(smoothing):
    rng = np.random.default_rng(4)
    z = rng.standard_normal((6, 5)) * 3
    labels = rng.integers(0, 5, 6)
    loss, grad = ref.smoothed_cross_entropy(z, labels, smoothing)
    np.testing.assert_allclose(
        grad,
        numeric_grad(lambda: float(ref.smoothed_cross_entropy(z, labels, smoothing)[0]), z),
        atol=1e-8,
    )
    # (1 - s) * the plain cross-entropy + s * the mean over classes of -log p
    plain = ref.softmax_cross_entropy(z, labels)[0]
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(loss, (1 - smoothing) * plain - smoothing * log_p.mean())
    # stable for huge logits
    assert np.isfinite(ref.smoothed_cross_entropy(z * 1e4, labels, smoothing)[0])


def test_reference_gather_affine_identity_and_shift():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 2, 6, 5))
    index = np.array([3, 0, 3])
    identity = np.tile([1.0, 0, 0, 0, 1, 0], (3, 1))
    np.testing.assert_array_equal(ref.gather_affine(x, index, identity), x[index])
    shift = np.tile([1.0, 0, 1, 0, 1, 0], (3, 1))  # sample one column to the right
    out = ref.gather_affine(x, index, shift)
    np.testing.assert_array_equal(out[..., :-1], x[index][..., 1:])
    np.testing.assert_array_equal(out[..., -1], 0)
    half = np.tile([1.0, 0, 0.5, 0, 1, 0], (3, 1))
    np.testing.assert_allclose(
        out[..., :-1] * 0 + ref.gather_affine(x, index, half)[..., :-1],
        (x[index][..., :-1] + x[index][..., 1:]) / 2,
    )


# ---- cpu against the reference ----------------------------------------------------------------


def close(a, b, dtype):
    tol = {"rtol": 2e-5, "atol": 2e-5} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-12}
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), **tol)


@needs_cpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_cpu_batchnorm_matches_reference(dtype, shape, relu, training):
    x, gamma, beta = bn_inputs(shape, dtype, seed=sum(shape))
    c = shape[1]
    stats = [(np.linspace(-1, 1, c), np.linspace(0.5, 2, c)) for _ in range(2)]
    outs = [
        b.batchnorm_forward(
            x, gamma, beta, *s, training=training, relu=relu, momentum=0.3, eps=1e-4
        )
        for b, s in zip((ref, cpu), stats)
    ]
    close(outs[0][0], outs[1][0], dtype)
    assert outs[1][0].dtype == dtype
    for a, b in zip(stats[0], stats[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    if training:
        dy = np.random.default_rng(9).standard_normal(shape).astype(dtype)
        grads = [
            b.batchnorm_backward(x, o[0], dy, gamma, o[1], o[2], relu=relu)
            for b, o in zip((ref, cpu), outs)
        ]
        for a, b in zip(*grads):
            close(a, b, dtype)
            assert b.dtype == dtype
        _, dgamma, _ = cpu.batchnorm_backward(
            x, outs[1][0], dy, gamma, outs[1][1], outs[1][2], relu=relu, need_dx=False
        )
        close(dgamma, grads[0][1], dtype)


@needs_cpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "shape,kernel,stride",
    [((2, 3, 7, 9), 2, None), ((1, 1, 5, 5), 3, 2), ((3, 2, 6, 4), 2, 1), ((2, 5, 4, 4), 4, None)],
)
def test_cpu_avgpool_matches_reference(dtype, shape, kernel, stride):
    x = np.random.default_rng(6).standard_normal(shape).astype(dtype)
    y = cpu.avgpool2d_forward(x, kernel, stride)
    close(y, ref.avgpool2d_forward(x, kernel, stride), dtype)
    dy = np.random.default_rng(7).standard_normal(y.shape).astype(dtype)
    close(
        cpu.avgpool2d_backward(dy, shape, kernel, stride),
        ref.avgpool2d_backward(dy, shape, kernel, stride),
        dtype,
    )
    close(cpu.global_avgpool2d_forward(x), ref.global_avgpool2d_forward(x), dtype)
    g = np.random.default_rng(8).standard_normal(shape[:2]).astype(dtype)
    close(cpu.global_avgpool2d_backward(g, shape), ref.global_avgpool2d_backward(g, shape), dtype)


@needs_cpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_leaky_relu_and_smoothing_match_reference(dtype):
    rng = np.random.default_rng(10)
    x = rng.standard_normal((3, 5, 7)).astype(dtype)
    dy = rng.standard_normal((3, 5, 7)).astype(dtype)
    close(cpu.leaky_relu_forward(x, 0.1), ref.leaky_relu_forward(x, 0.1), dtype)
    close(cpu.leaky_relu_backward(x, dy, 0.1), ref.leaky_relu_backward(x, dy, 0.1), dtype)
    z = rng.standard_normal((13, 10)).astype(dtype) * 4
    labels = rng.integers(0, 10, 13)
    for smoothing in (0.0, 0.1, 0.3):
        a, b = (
            ref.smoothed_cross_entropy(z, labels, smoothing),
            cpu.smoothed_cross_entropy(z, labels, smoothing),
        )
        close(a[0], b[0], dtype)
        close(a[1], b[1], dtype)
    loss, grad = cpu.smoothed_cross_entropy(z, labels, 0.0)
    ce_loss, ce_grad = cpu.softmax_cross_entropy(z, labels)
    close(loss, ce_loss, dtype)
    close(grad, ce_grad, dtype)


@needs_cpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpu_gather_affine_matches_reference(dtype):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((6, 2, 9, 7)).astype(dtype)
    index = rng.integers(0, 6, 10)
    angle = rng.uniform(-0.5, 0.5, 10)
    m = np.stack(
        [
            np.cos(angle),
            -np.sin(angle),
            rng.uniform(-3, 3, 10),
            np.sin(angle),
            np.cos(angle),
            rng.uniform(-3, 3, 10),
        ],
        axis=1,
    )
    close(cpu.gather_affine(x, index, m), ref.gather_affine(x, index, m), dtype)
    out = np.empty((12, 2, 9, 7), dtype)
    got = cpu.gather_affine(x, index, m, out=out)
    assert got.base is out or np.shares_memory(got, out)


# ---- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["numpy", "cpu"])
def test_bad_input_names_the_argument(name):
    if name == "cpu" and cpu is None:
        pytest.skip("compiled kernels not built")
    b = backends.get(name)
    x, gamma, beta = bn_inputs((4, 3), np.float32)
    stats = (np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="x must have shape"):
        b.batchnorm_forward(x[0], gamma, beta, *stats, training=True)
    with pytest.raises(ValueError, match="gamma"):
        b.batchnorm_forward(x, gamma[:2], beta, *stats, training=True)
    with pytest.raises(TypeError, match="beta"):
        b.batchnorm_forward(x, gamma, beta.astype(np.float64), *stats, training=True)
    with pytest.raises(TypeError, match="running_mean"):
        b.batchnorm_forward(x, gamma, beta, np.zeros(3, np.float32), stats[1], training=True)
    with pytest.raises(ValueError, match="momentum"):
        b.batchnorm_forward(x, gamma, beta, *stats, training=True, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        b.batchnorm_forward(x, gamma, beta, *stats, training=True, eps=0)
    with pytest.raises(ValueError, match="more than one value"):
        b.batchnorm_forward(x[:1], gamma, beta, *stats, training=True)
    with pytest.raises(ValueError, match="NaN"):
        b.batchnorm_forward(np.full((4, 3), np.nan, np.float32), gamma, beta, *stats, training=True)
    with pytest.raises(TypeError, match="mean"):
        b.batchnorm_backward(x, x, x, gamma, np.zeros(3, np.float32), np.ones(3))
    with pytest.raises(ValueError, match="kernel"):
        b.avgpool2d_forward(np.zeros((1, 1, 3, 3), np.float32), 4)
    with pytest.raises(ValueError, match="kernel"):
        b.avgpool2d_forward(np.zeros((1, 1, 3, 3), np.float32), 0)
    with pytest.raises(ValueError, match="dy"):
        b.avgpool2d_backward(np.zeros((1, 1, 2, 2), np.float32), (1, 1, 3, 3), 2)
    with pytest.raises(ValueError, match="x must have 4"):
        b.global_avgpool2d_forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="slope"):
        b.leaky_relu_forward(x, -0.5)
    with pytest.raises(ValueError, match="smoothing"):
        b.smoothed_cross_entropy(x, np.zeros(4, np.int64), 1.0)
    with pytest.raises(ValueError, match="labels"):
        b.smoothed_cross_entropy(x, np.full(4, 3), 0.1)
    with pytest.raises(IndexError, match="index"):
        b.gather_affine(np.zeros((2, 1, 3, 3), np.float32), np.array([2]), np.zeros((1, 6)))
    with pytest.raises(ValueError, match="matrices"):
        b.gather_affine(np.zeros((2, 1, 3, 3), np.float32), np.array([1]), np.zeros((1, 5)))


# ---- determinism -----------------------------------------------------------------------------


@needs_cpu
def test_cpu_kernels_same_bits_at_any_thread_count():
    before = fastnn.get_num_threads()
    rng = np.random.default_rng(12)
    x = rng.standard_normal((64, 8, 12, 12)).astype(np.float32) + 2  # above the parallel size
    gamma, beta = rng.uniform(0.5, 1.5, 8).astype(np.float32), np.zeros(8, np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    z = rng.standard_normal((2048, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 2048)
    m = np.tile([1.05, 0.1, -0.5, -0.1, 0.95, 0.7], (64, 1))

    def run():
        y, mean, inv_std = cpu.batchnorm_forward(
            x, gamma, beta, np.zeros(8), np.ones(8), training=True, relu=True
        )
        out = [
            y,
            mean,
            inv_std,
            *cpu.batchnorm_backward(x, y, dy, gamma, mean, inv_std, relu=True),
            cpu.avgpool2d_forward(x, 3, 1),
            cpu.avgpool2d_backward(dy[:, :, :10, :10], x.shape, 3, 1),
            cpu.global_avgpool2d_forward(x),
            cpu.leaky_relu_forward(x, 0.1),
            *cpu.smoothed_cross_entropy(z, labels, 0.1),
            cpu.gather_affine(x, np.arange(64)[::-1].copy(), m),
        ]
        return [np.asarray(a).tobytes() for a in out]

    try:
        results = []
        for threads in (1, 2, 3):
            fastnn.set_num_threads(threads)
            results.append(run())
    finally:
        fastnn.set_num_threads(before)
    assert results[0] == results[1] == results[2]
