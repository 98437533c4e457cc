"""Every cpu kernel against the NumPy reference, on many shapes, float32 and float64."""

import numpy as np
import pytest

import fastnn
from fastnn import backends
from fastnn.backends.numpy import NumpyBackend
from fastnn_testing import assert_matches

ref = NumpyBackend()
cpu = backends.get("cpu")  # the tests run against the installed, compiled package


def normal(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ---- linear -------------------------------------------------------------------------------

LINEAR_SHAPES = [
    (1, 1, 1),
    (1, 784, 10),
    (5, 1, 13),
    (13, 17, 19),
    (64, 31, 1),
    (2, 3, 97),
    (128, 100, 37),
    (31, 257, 129),
    (7, 64, 64),
]


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("n,fin,fout", LINEAR_SHAPES)
def test_linear(n, fin, fout, relu, dtype):
    rng = np.random.default_rng(n * 1000 + fin + fout)
    x, w, b = (
        normal(rng, (n, fin), dtype),
        normal(rng, (fout, fin), dtype),
        normal(rng, fout, dtype),
    )
    y = cpu.linear_forward(x, w, b, relu=relu)
    assert_matches(y, ref.linear_forward(x, w, b, relu=relu))
    dy = normal(rng, y.shape, dtype)
    assert_matches(
        cpu.linear_backward(x, w, y, dy, relu=relu), ref.linear_backward(x, w, y, dy, relu=relu)
    )


def test_linear_without_bias_and_with_outputs(dtype):
    rng = np.random.default_rng(5)
    x, w = normal(rng, (9, 6), dtype), normal(rng, (4, 6), dtype)
    y = np.full((9, 4), np.nan, dtype)  # never read
    assert cpu.linear_forward(x, w, None, relu=True, out=y) is y
    assert_matches(y, ref.linear_forward(x, w, None, relu=True))
    dy = normal(rng, y.shape, dtype)
    outs = (np.empty_like(x), np.empty_like(w), np.empty(4, dtype))
    work = np.empty_like(dy)
    result = cpu.linear_backward(x, w, y, dy, relu=True, out=outs, work=work)
    assert all(r is o for r, o in zip(result, outs))
    assert_matches(result, ref.linear_backward(x, w, y, dy, relu=True))


def test_linear_backward_can_skip_dx():
    rng = np.random.default_rng(6)
    x, w = normal(rng, (8, 5), np.float64), normal(rng, (3, 5), np.float64)
    y = cpu.linear_forward(x, w, np.zeros(3))
    dy = normal(rng, y.shape, np.float64)
    dx, dw, db = cpu.linear_backward(x, w, y, dy, need_dx=False)
    assert dx is None
    assert_matches((dw, db), ref.linear_backward(x, w, y, dy)[1:])


# ---- conv2d (the kernels' own tests are in test_cpu_conv.py; here: the wrapper's outputs) ---


@pytest.mark.parametrize("relu", [False, True])
def test_conv2d_outputs_are_overwritten_and_dx_can_be_skipped(relu, dtype):
    rng = np.random.default_rng(12)
    x, w, b = (
        normal(rng, (2, 3, 9, 8), dtype),
        normal(rng, (4, 3, 3, 3), dtype),
        normal(rng, 4, dtype),
    )
    y = np.full((2, 4, 5, 4), np.nan, dtype)
    assert cpu.conv2d_forward(x, w, b, 2, 1, relu=relu, out=y) is y
    assert_matches(y, ref.conv2d_forward(x, w, b, 2, 1, relu=relu))
    dy = normal(rng, y.shape, dtype)
    outs = (np.full_like(x, np.nan), np.full_like(w, np.nan), np.full(4, np.nan, dtype))
    result = cpu.conv2d_backward(x, w, y, dy, 2, 1, relu=relu, out=outs)
    assert all(r is o for r, o in zip(result, outs))
    expected = ref.conv2d_backward(x, w, y, dy, 2, 1, relu=relu)
    assert_matches(result, expected)
    dx, dw, db = cpu.conv2d_backward(x, w, y, dy, 2, 1, relu=relu, need_dx=False)
    assert dx is None
    assert_matches((dw, db), expected[1:])


# ---- max-pool -----------------------------------------------------------------------------

POOL_CASES = [(k, s) for k in range(1, 6) for s in (None, 1, 2, 3)]


@pytest.mark.parametrize("kernel,stride", POOL_CASES)
def test_maxpool(kernel, stride, dtype):
    rng = np.random.default_rng(kernel * 10 + (stride or 0))
    for shape in [(1, 1, 5, 5), (2, 3, 11, 7), (3, 2, 13, 17)]:
        # few distinct values, so windows hold ties (the first in row-major order must win)
        x = rng.integers(-3, 4, size=shape).astype(dtype)
        y, argmax = cpu.maxpool2d_forward(x, kernel, stride)
        assert_matches((y, argmax), ref.maxpool2d_forward(x, kernel, stride))
        dy = normal(rng, y.shape, dtype)
        assert_matches(
            cpu.maxpool2d_backward(dy, argmax, x.shape, kernel, stride),
            ref.maxpool2d_backward(dy, argmax, x.shape, kernel, stride),
        )


def test_maxpool_nan_and_infinity_follow_the_reference(dtype):
    x = np.array(
        [
            [
                [
                    [1, np.nan, 2, np.nan],
                    [np.inf, 0, -np.inf, -np.inf],
                    [-np.inf, -np.inf, 3, 3],
                    [-np.inf, -np.inf, 3, np.inf],
                ]
            ]
        ],
        dtype,
    )
    for kernel, stride in [(2, 2), (2, 1), (3, 1)]:
        y, argmax = cpu.maxpool2d_forward(x, kernel, stride, check_finite=False)
        y_ref, argmax_ref = ref.maxpool2d_forward(x, kernel, stride, check_finite=False)
        np.testing.assert_array_equal(y, y_ref)  # NaN == NaN here
        np.testing.assert_array_equal(argmax, argmax_ref)


def test_maxpool_large_overlapping_backward_accumulates():
    # enough planes to take the parallel path; stride 1 sends many gradients to one input
    rng = np.random.default_rng(3)
    x = normal(rng, (8, 16, 24, 24), np.float32)
    y, argmax = cpu.maxpool2d_forward(x, 3, 1)
    assert_matches((y, argmax), ref.maxpool2d_forward(x, 3, 1))
    dy = normal(rng, y.shape, np.float32)
    dx = np.full(x.shape, 7.0, np.float32)  # must be overwritten, not added to
    assert cpu.maxpool2d_backward(dy, argmax, x.shape, 3, 1, out=dx) is dx
    assert_matches(dx, ref.maxpool2d_backward(dy, argmax, x.shape, 3, 1))


def test_maxpool_outputs_are_reused():
    rng = np.random.default_rng(4)
    x = normal(rng, (2, 3, 8, 8), np.float32)
    y, argmax = np.empty((2, 3, 4, 4), np.float32), np.empty((2, 3, 4, 4), np.int32)
    result = cpu.maxpool2d_forward(x, out=(y, argmax))
    assert result[0] is y and result[1] is argmax
    assert_matches((y, argmax), ref.maxpool2d_forward(x))


# ---- softmax cross-entropy ----------------------------------------------------------------


@pytest.mark.parametrize("n,classes", [(1, 1), (1, 10), (2, 2), (37, 11), (128, 10), (300, 97)])
def test_softmax_cross_entropy(n, classes, dtype):
    rng = np.random.default_rng(n + classes)
    logits, labels = normal(rng, (n, classes), dtype, 4.0), rng.integers(0, classes, n)
    loss, d = cpu.softmax_cross_entropy(logits, labels)
    loss_ref, d_ref = ref.softmax_cross_entropy(logits, labels)
    assert type(loss) is type(loss_ref)
    assert_matches(np.asarray(loss), np.asarray(loss_ref))
    assert_matches(d, d_ref)


def test_softmax_cross_entropy_extreme_logits(dtype):
    rng = np.random.default_rng(9)
    logits = rng.choice(np.array([1e4, -1e4, 0.0, 9999.0], dtype), size=(64, 10))
    logits[0] = -1e4  # a row of equal, very negative logits
    labels = rng.integers(0, 10, 64)
    loss, d = cpu.softmax_cross_entropy(logits, labels)
    assert np.isfinite(loss) and np.isfinite(d).all()
    loss_ref, d_ref = ref.softmax_cross_entropy(logits, labels)
    assert_matches(np.asarray(loss), np.asarray(loss_ref))
    assert_matches(d, d_ref)


@pytest.mark.parametrize(
    "label_dtype",
    [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64, np.intp],
)
def test_softmax_cross_entropy_labels_of_every_integer_dtype(label_dtype):
    rng = np.random.default_rng(1)
    logits = normal(rng, (20, 7), np.float32)
    labels = rng.integers(0, 7, 20).astype(label_dtype)
    assert_matches(
        cpu.softmax_cross_entropy(logits, labels),
        ref.softmax_cross_entropy(logits, labels.astype(np.int64)),
    )


def test_softmax_cross_entropy_in_place_gradient():
    rng = np.random.default_rng(2)
    logits, labels = normal(rng, (16, 10), np.float32), rng.integers(0, 10, 16)
    expected = ref.softmax_cross_entropy(logits, labels)
    loss, d = cpu.softmax_cross_entropy(logits, labels, out=logits)
    assert d is logits
    assert_matches((np.asarray(loss), d), (np.asarray(expected[0]), expected[1]))


def test_softmax_cross_entropy_does_not_depend_on_thread_count():
    rng = np.random.default_rng(8)
    logits, labels = normal(rng, (2000, 10), np.float32, 3.0), rng.integers(0, 10, 2000)
    before = fastnn.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            fastnn.set_num_threads(threads)
            results.append(cpu.softmax_cross_entropy(logits, labels))
    finally:
        fastnn.set_num_threads(before)
    for loss, d in results[1:]:
        assert loss == results[0][0]
        np.testing.assert_array_equal(d, results[0][1])


# ---- optimizers ---------------------------------------------------------------------------

OPTIM_SHAPES = [(1,), (7,), (8193,), (300, 301), (2, 3, 4, 5)]


@pytest.mark.parametrize("shape", OPTIM_SHAPES)
@pytest.mark.parametrize(
    "momentum,nesterov,weight_decay",
    [
        (0.0, False, 0.0),
        (0.0, False, 0.01),
        (0.9, False, 0.0),
        (0.9, True, 0.001),
        (0.999, False, 0.0),
    ],
)
def test_sgd_step(shape, momentum, nesterov, weight_decay, dtype):
    rng = np.random.default_rng(len(shape))
    param, velocity = normal(rng, shape, dtype), normal(rng, shape, dtype)
    param_ref, velocity_ref = param.copy(), velocity.copy()
    for _ in range(3):
        grad = normal(rng, shape, dtype)
        kwargs = dict(lr=0.05, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
        cpu.sgd_step(param, grad, velocity, **kwargs)
        ref.sgd_step(param_ref, grad, velocity_ref, **kwargs)
    assert_matches(param, param_ref)
    assert_matches(velocity, velocity_ref)


def test_sgd_momentum_one_is_refused_as_optim_sgd_refuses_it():
    """momentum=1.0 never decays the velocity; the backends once took it while optim.SGD
    refused it. One rule now, the stricter: [0, 1)."""
    p = np.zeros(3, np.float32)
    for backend in (cpu, ref):
        with pytest.raises(ValueError, match=r"momentum must be < 1.0"):
            backend.sgd_step(p, p.copy(), p.copy(), lr=0.1, momentum=1.0)


@pytest.mark.parametrize("shape", OPTIM_SHAPES)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_adam_step(shape, weight_decay, dtype):
    rng = np.random.default_rng(len(shape) + 10)
    param = normal(rng, shape, dtype)
    m, v = np.zeros(shape, dtype), np.zeros(shape, dtype)
    param_ref, m_ref, v_ref = param.copy(), m.copy(), v.copy()
    for step in range(1, 4):
        grad = normal(rng, shape, dtype)
        kwargs = dict(
            lr=1e-3, step=step, beta1=0.8, beta2=0.99, eps=1e-7, weight_decay=weight_decay
        )
        cpu.adam_step(param, grad, m, v, **kwargs)
        ref.adam_step(param_ref, grad, m_ref, v_ref, **kwargs)
    for actual, expected in ((param, param_ref), (m, m_ref), (v, v_ref)):
        assert_matches(actual, expected)


def test_optimizers_accept_strided_gradients():
    rng = np.random.default_rng(11)
    param = normal(rng, (6, 5), np.float64)
    grad = normal(rng, (5, 6), np.float64).T  # not C-contiguous: copied, never misread
    param_ref = param.copy()
    cpu.sgd_step(param, grad, lr=0.1)
    ref.sgd_step(param_ref, grad, lr=0.1)
    assert_matches(param, param_ref)


# ---- threads ------------------------------------------------------------------------------


def test_thread_count_round_trips():
    before = fastnn.get_num_threads()
    try:
        fastnn.set_num_threads(1)
        assert fastnn.get_num_threads() == 1
        fastnn.set_num_threads(3)
        expected = 3 if fastnn._threads.openmp_enabled() else 1
        assert fastnn.get_num_threads() == expected
    finally:
        fastnn.set_num_threads(before)
    assert fastnn.get_num_threads() == before


@pytest.mark.parametrize(
    "bad,error",
    [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), ("2", TypeError)],
)
def test_set_num_threads_refuses_bad_counts(bad, error):
    with pytest.raises(error, match="n must"):
        fastnn.set_num_threads(bad)
