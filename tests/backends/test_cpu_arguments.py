"""Bad arguments raise ValueError/TypeError naming the argument, on cpu and on the reference;
generated arguments give either the reference's answer or the same documented exception."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastnn import backends
from fastnn.backends.numpy import NumpyBackend
from fastnn_testing import assert_matches

ref, cpu = NumpyBackend(), backends.get("cpu")

f32, f64 = np.float32, np.float64


def arr(*shape, dtype=f32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def strided(*shape, dtype=f32):
    """A non-C-contiguous array with the given shape."""
    return arr(*shape[:-1], shape[-1] * 2, dtype=dtype)[..., ::2]


# ---- linear -------------------------------------------------------------------------------

X, W, B = arr(4, 3), arr(5, 3), arr(5)
Y = arr(4, 5)

LINEAR_FORWARD_CASES = [
    ((arr(4), W, B), ValueError, "x"),
    ((X, arr(5, 4), B), ValueError, "w"),
    ((X, W, arr(4)), ValueError, "b"),
    ((X.astype(np.int32), W, B), TypeError, "x"),
    ((X, W.astype(f64), B), TypeError, "w"),
    ((X, W, B.astype(f64)), TypeError, "b"),
    ((X.tolist(), W, B), TypeError, "x"),
    ((X, W, "bias"), TypeError, "b"),
    ((np.where(X > 0, np.inf, X).astype(f32), W, B), ValueError, "x"),
]


@pytest.mark.parametrize("args,error,name", LINEAR_FORWARD_CASES)
def test_linear_forward_bad_arguments(backend, args, error, name):
    with pytest.raises(error, match=rf"\b{name}\b"):
        backend.linear_forward(*args)


LINEAR_BACKWARD_CASES = [
    ((X, W, arr(4, 4), Y), ValueError, "y"),
    ((X, W, Y, arr(5, 4)), ValueError, "dy"),
    ((X, W, Y, Y.astype(f64)), TypeError, "dy"),
    ((X, W, Y.astype(np.int64), Y), TypeError, "y"),
    ((X, arr(5, 2), Y, Y), ValueError, "w"),
    ((X, W, Y, np.full((4, 5), np.nan, f32)), ValueError, "dy"),
]


@pytest.mark.parametrize("args,error,name", LINEAR_BACKWARD_CASES)
def test_linear_backward_bad_arguments(backend, args, error, name):
    with pytest.raises(error, match=rf"\b{name}\b"):
        backend.linear_backward(*args, relu=True)


def test_strided_inputs_are_copied_not_misread(backend):
    x, w = strided(4, 3), strided(5, 3)
    expected = ref.linear_forward(np.ascontiguousarray(x), np.ascontiguousarray(w), B)
    np.testing.assert_allclose(backend.linear_forward(x, w, B), expected, rtol=1e-5)
    xt = arr(3, 4).T  # Fortran-ordered
    np.testing.assert_allclose(
        backend.linear_forward(xt, W, B),
        ref.linear_forward(np.ascontiguousarray(xt), W, B),
        rtol=1e-5,
    )
    xs = strided(2, 3, 6, 6)
    for actual, expected in zip(
        backend.maxpool2d_forward(xs, 2), ref.maxpool2d_forward(np.ascontiguousarray(xs), 2)
    ):
        np.testing.assert_array_equal(actual, expected)
    logits, labels = strided(5, 4), np.arange(10)[::2] % 4  # strided labels too
    for actual, expected in zip(
        backend.softmax_cross_entropy(logits, labels),
        ref.softmax_cross_entropy(np.ascontiguousarray(logits), np.ascontiguousarray(labels)),
    ):
        np.testing.assert_allclose(actual, expected, rtol=1e-6)


# ---- outputs (cpu's keyword-only out=) ----------------------------------------------------


def test_outputs_must_be_contiguous_writeable_right_shape_and_dtype():
    x = arr(2, 3, 6, 6)
    with pytest.raises(ValueError, match="y must be C-contiguous"):
        cpu.maxpool2d_forward(x, out=(strided(2, 3, 3, 3), np.empty((2, 3, 3, 3), np.int32)))
    with pytest.raises(TypeError, match="argmax must be int32"):
        cpu.maxpool2d_forward(x, out=(np.empty((2, 3, 3, 3), f32), np.empty((2, 3, 3, 3))))
    with pytest.raises(ValueError, match="y must have shape"):
        cpu.maxpool2d_forward(
            x, out=(np.empty((2, 3, 3, 4), f32), np.empty((2, 3, 3, 3), np.int32))
        )
    read_only = np.empty((2, 3, 3, 3), f32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="y must be writeable"):
        cpu.maxpool2d_forward(x, out=(read_only, np.empty((2, 3, 3, 3), np.int32)))
    with pytest.raises(TypeError, match="out must be a tuple of 2"):
        cpu.maxpool2d_forward(x, out=np.empty((2, 3, 3, 3), f32))
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        cpu.linear_forward(X, W, B, out=strided(4, 5))
    with pytest.raises(ValueError, match="dw must be C-contiguous"):
        cpu.linear_backward(X, W, Y, Y, out=(None, strided(5, 3), None))
    with pytest.raises(ValueError, match="work must be C-contiguous"):
        cpu.linear_backward(X, W, Y, Y, relu=True, work=strided(4, 5))
    logits = arr(4, 3)
    with pytest.raises(ValueError, match="out must be C-contiguous"):
        cpu.softmax_cross_entropy(logits, np.zeros(4, int), out=strided(4, 3))
    with pytest.raises(TypeError, match="out must be float32"):
        cpu.softmax_cross_entropy(logits, np.zeros(4, int), out=np.empty((4, 3)))


def test_outputs_must_not_overlap_inputs():
    x = arr(1, 2, 4, 4)
    y = np.empty((1, 2, 2, 2), f32)
    with pytest.raises(ValueError, match="must not overlap"):
        cpu.maxpool2d_forward(x, out=(y, y.view(np.int32)))
    buffer = arr(8, 3)
    with pytest.raises(ValueError, match="out must not overlap logits"):
        cpu.softmax_cross_entropy(buffer[:4], np.zeros(4, int), out=buffer[2:6])
    p = arr(10)
    with pytest.raises(ValueError, match="must not overlap"):
        cpu.sgd_step(p, p, lr=0.1)


# ---- softmax cross-entropy ----------------------------------------------------------------

LOGITS = arr(4, 3)

LOSS_CASES = [
    ((LOGITS, np.array([0, 1, 2, 3])), ValueError, "labels"),  # == classes
    ((LOGITS, np.array([0, -1, 2, 0])), ValueError, "labels"),  # negative
    ((LOGITS, np.array([0, 2**62, 2, 0])), ValueError, "labels"),  # huge
    ((LOGITS, np.array([0, 2**63 + 5, 2, 0], np.uint64)), ValueError, "labels"),
    ((LOGITS, np.array([0, 200, 2, 0], np.uint8)), ValueError, "labels"),
    ((LOGITS, np.array([0, -128, 2, 0], np.int8)), ValueError, "labels"),
    ((LOGITS, np.array([0.0, 1.0, 2.0, 0.0])), TypeError, "labels"),
    ((LOGITS, np.array([True, False, True, False])), TypeError, "labels"),
    ((LOGITS, np.array([0, 1, 2])), ValueError, "labels"),
    ((LOGITS, np.zeros((4, 1), int)), ValueError, "labels"),
    ((LOGITS, [0, 1, 2, 0]), TypeError, "labels"),
    ((arr(4), np.zeros(4, int)), ValueError, "logits"),
    ((np.zeros((0, 3), f32), np.zeros(0, int)), ValueError, "logits"),
    ((np.zeros((4, 0), f32), np.zeros(4, int)), ValueError, "logits"),
    ((LOGITS.astype(np.float16), np.zeros(4, int)), TypeError, "logits"),
    ((np.full((4, 3), np.nan, f32), np.zeros(4, int)), ValueError, "logits"),
    ((np.full((4, 3), -np.inf, f32), np.zeros(4, int)), ValueError, "logits"),
]


@pytest.mark.parametrize("args,error,name", LOSS_CASES)
def test_softmax_cross_entropy_bad_arguments(backend, args, error, name):
    with pytest.raises(error, match=rf"\b{name}\b"):
        backend.softmax_cross_entropy(*args)


def test_loss_kernel_checks_labels_itself():
    """Called directly with bad labels, the compiled kernel refuses instead of reading out of
    bounds."""
    from fastnn._kernels import loss

    d = np.empty((4, 3), f32)
    for bad in (3, -1, 2**62):
        with pytest.raises(ValueError, match="labels"):
            loss.softmax_cross_entropy(LOGITS, np.array([0, bad, 0, 0], np.int64), d)


# ---- max-pool -----------------------------------------------------------------------------

POOL_X = arr(2, 3, 6, 5)

POOL_FORWARD_CASES = [
    ((POOL_X, 0), ValueError, "kernel"),
    ((POOL_X, -1), ValueError, "kernel"),
    ((POOL_X, 2, 0), ValueError, "stride"),
    ((POOL_X, 2, -3), ValueError, "stride"),
    ((POOL_X, 6), ValueError, "kernel"),  # wider than the input (width 5)
    ((POOL_X, 2.0), TypeError, "kernel"),
    ((POOL_X, True), TypeError, "kernel"),
    ((POOL_X, 2, 1.5), TypeError, "stride"),
    ((arr(3, 6, 5), 2), ValueError, "x"),
    ((POOL_X.astype(np.int16), 2), TypeError, "x"),
    ((np.full((1, 1, 2, 2), np.nan, f32), 2), ValueError, "x"),
]


@pytest.mark.parametrize("args,error,name", POOL_FORWARD_CASES)
def test_maxpool_forward_bad_arguments(backend, args, error, name):
    with pytest.raises(error, match=rf"\b{name}\b"):
        backend.maxpool2d_forward(*args)


DY = arr(2, 3, 3, 2)
GOOD_ARGMAX = ref.maxpool2d_forward(POOL_X, 2)[1]

POOL_BACKWARD_CASES = [
    ((DY, np.full_like(GOOD_ARGMAX, 30), POOL_X.shape), ValueError, "argmax"),  # == H*W
    ((DY, np.full_like(GOOD_ARGMAX, -1), POOL_X.shape), ValueError, "argmax"),
    ((DY, np.full(DY.shape, 2**40, np.int64), POOL_X.shape), ValueError, "argmax"),
    ((DY, GOOD_ARGMAX.astype(f32), POOL_X.shape), TypeError, "argmax"),
    ((DY, GOOD_ARGMAX[:, :, :2], POOL_X.shape), ValueError, "argmax"),
    ((DY, GOOD_ARGMAX.tolist(), POOL_X.shape), TypeError, "argmax"),
    ((arr(2, 3, 3, 3), GOOD_ARGMAX, POOL_X.shape), ValueError, "dy"),
    ((DY.astype(np.int32), GOOD_ARGMAX, POOL_X.shape), TypeError, "dy"),
    ((DY, GOOD_ARGMAX, (2, 3, 6)), ValueError, "x_shape"),
    ((DY, GOOD_ARGMAX, (2, 3, 6, 0)), ValueError, "x_shape"),
    ((DY, GOOD_ARGMAX, (2, 3, 6.0, 5)), TypeError, "x_shape"),
    ((DY, GOOD_ARGMAX, POOL_X.shape, 2, 0), ValueError, "stride"),
    ((DY, GOOD_ARGMAX, POOL_X.shape, 7), ValueError, "kernel"),
]


@pytest.mark.parametrize("args,error,name", POOL_BACKWARD_CASES)
def test_maxpool_backward_bad_arguments(backend, args, error, name):
    with pytest.raises(error, match=rf"\b{name}\b"):
        backend.maxpool2d_backward(*args)


def test_pool_kernel_skips_out_of_range_argmax():
    """Called directly, the compiled backward never writes outside the plane; it reports."""
    from fastnn._kernels import pool

    dx = np.zeros((2, 4), f32)
    bad = pool.maxpool_backward(np.ones((2, 2), f32), np.array([[0, 4], [-1, 3]], np.int32), dx)
    assert bad == 2
    np.testing.assert_array_equal(dx, [[1, 0, 0, 0], [0, 0, 0, 1]])


# ---- conv2d -------------------------------------------------------------------------------

CX, CW, CB = arr(2, 3, 7, 7), arr(4, 3, 3, 3), arr(4)

CONV_CASES = [
    ((CX, CW, CB, 0), ValueError, "stride"),
    ((CX, CW, CB, 1, -1), ValueError, "padding"),
    ((CX, arr(4, 3, 9, 9), CB), ValueError, "kernel"),  # does not fit 7x7
    ((CX, arr(4, 2, 3, 3), CB), ValueError, "w"),  # channel mismatch
    ((CX, CW, arr(3)), ValueError, "b"),
    ((CX, CW.astype(f64), CB), TypeError, "w"),
    ((CX[0], CW, CB), ValueError, "x"),
    ((CX, CW, CB, 1.0), TypeError, "stride"),
]


@pytest.mark.parametrize("args,error,name", CONV_CASES)
def test_conv2d_forward_bad_arguments(backend, args, error, name):
    with pytest.raises(error, match=rf"\b{name}\b"):
        backend.conv2d_forward(*args)


# ---- optimizers ---------------------------------------------------------------------------

P = arr(6, 4)

SGD_CASES = [
    (dict(param=strided(6, 4), grad=P, lr=0.1), ValueError, "param"),
    (dict(param=P.copy(), grad=arr(6, 5), lr=0.1), ValueError, "grad"),
    (dict(param=P.copy(), grad=P.astype(f64), lr=0.1), TypeError, "grad"),
    (dict(param=P.astype(np.int32), grad=P, lr=0.1), TypeError, "param"),
    (dict(param=P.copy(), grad=P, lr=0.0), ValueError, "lr"),
    (dict(param=P.copy(), grad=P, lr=np.nan), ValueError, "lr"),
    (dict(param=P.copy(), grad=P, lr="0.1"), TypeError, "lr"),
    (dict(param=P.copy(), grad=P, lr=0.1, momentum=1.5, velocity=P.copy()), ValueError, "momentum"),
    (dict(param=P.copy(), grad=P, lr=0.1, momentum=0.9), ValueError, "velocity"),
    (
        dict(param=P.copy(), grad=P, lr=0.1, momentum=0.9, velocity=strided(6, 4)),
        ValueError,
        "velocity",
    ),
    (
        dict(param=P.copy(), grad=P, lr=0.1, momentum=0.9, velocity=P.astype(f64)),
        TypeError,
        "velocity",
    ),
    (dict(param=P.copy(), grad=P, lr=0.1, nesterov=True), ValueError, "nesterov"),
    (dict(param=P.copy(), grad=P, lr=0.1, weight_decay=-1.0), ValueError, "weight_decay"),
]


@pytest.mark.parametrize("kwargs,error,name", SGD_CASES)
def test_sgd_bad_arguments(backend, kwargs, error, name):
    kwargs = dict(kwargs)
    param, grad, velocity = kwargs.pop("param"), kwargs.pop("grad"), kwargs.pop("velocity", None)
    before = param.copy()
    with pytest.raises(error, match=rf"\b{name}\b"):
        backend.sgd_step(param, grad, velocity, **kwargs)
    np.testing.assert_array_equal(param, before)  # nothing was updated


ADAM_CASES = [
    (dict(lr=-1.0), ValueError, "lr"),
    (dict(step=0), ValueError, "step"),
    (dict(step=1.0), TypeError, "step"),
    (dict(beta1=1.0), ValueError, "beta1"),
    (dict(beta2=-0.1), ValueError, "beta2"),
    (dict(eps=0.0), ValueError, "eps"),
    (dict(m=None), TypeError, "m"),
    (dict(v=arr(6, 3)), ValueError, "v"),
    (dict(m=strided(6, 4)), ValueError, "m"),
]


@pytest.mark.parametrize("override,error,name", ADAM_CASES)
def test_adam_bad_arguments(backend, override, error, name):
    kwargs = dict(param=P.copy(), grad=P, m=np.zeros_like(P), v=np.zeros_like(P), lr=0.1, step=1)
    kwargs.update(override)
    with pytest.raises(error, match=rf"\b{name}\b"):
        backend.adam_step(
            kwargs.pop("param"), kwargs.pop("grad"), kwargs.pop("m"), kwargs.pop("v"), **kwargs
        )


def test_adam_huge_step_is_fine():
    p, p_ref = P.copy(), P.copy()
    for backend, param in ((cpu, p), (ref, p_ref)):
        backend.adam_step(param, P, np.zeros_like(P), np.zeros_like(P), lr=0.1, step=2**62)
    np.testing.assert_allclose(p, p_ref, rtol=1e-6)


# ---- generated arguments: the reference's answer or the same exception --------------------


def outcome(call):
    try:
        return "ok", call()
    except (ValueError, TypeError) as exc:
        return type(exc), str(exc)


def assert_same_outcome(cpu_call, ref_call, rtol):
    (cpu_kind, cpu_value), (ref_kind, ref_value) = outcome(cpu_call), outcome(ref_call)
    assert cpu_kind == ref_kind, (cpu_value, ref_value)
    if cpu_kind != "ok":
        return
    # |error| <= rtol * (|expected| + max(1, max |expected|)), elementwise at worst
    assert_matches(cpu_value, ref_value, rtol=2 * rtol, floor=1.0)


fast = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
sizes = st.integers(0, 9)


@fast
@given(
    n=st.integers(0, 3),
    c=st.integers(0, 3),
    h=sizes,
    w=sizes,
    kernel=st.integers(-1, 6),
    stride=st.one_of(st.none(), st.integers(-1, 4)),
    dtype=st.sampled_from([f32, f64]),
    seed=st.integers(0, 2**16),
)
def test_generated_maxpool(n, c, h, w, kernel, stride, dtype, seed):
    x = arr(n, c, h, w, dtype=dtype, seed=seed)
    assert_same_outcome(
        lambda: cpu.maxpool2d_forward(x, kernel, stride),
        lambda: ref.maxpool2d_forward(x, kernel, stride),
        1e-12,
    )
    try:
        y, argmax = ref.maxpool2d_forward(x, kernel, stride)
    except (ValueError, TypeError):
        return
    dy = arr(*y.shape, dtype=dtype, seed=seed + 1)
    assert_same_outcome(
        lambda: cpu.maxpool2d_backward(dy, argmax, x.shape, kernel, stride),
        lambda: ref.maxpool2d_backward(dy, argmax, x.shape, kernel, stride),
        1e-12,
    )


label_values = st.one_of(st.integers(-3, 12), st.integers(-(2**63), 2**63 - 1))


@fast
@given(
    n=st.integers(0, 6),
    classes=st.integers(0, 10),
    labels=st.lists(label_values, min_size=0, max_size=7),
    label_dtype=st.sampled_from([np.int8, np.uint8, np.int32, np.int64, np.uint64]),
    dtype=st.sampled_from([f32, f64]),
    seed=st.integers(0, 2**16),
)
def test_generated_softmax_cross_entropy(n, classes, labels, label_dtype, dtype, seed):
    info = np.iinfo(label_dtype)
    labels = np.array([v for v in labels if info.min <= v <= info.max], dtype=label_dtype)
    logits = arr(n, classes, dtype=dtype, seed=seed) * 5
    assert_same_outcome(
        lambda: cpu.softmax_cross_entropy(logits, labels),
        lambda: ref.softmax_cross_entropy(logits, labels),
        1e-5 if dtype == f32 else 1e-10,
    )


@fast
@given(
    n=st.integers(0, 5),
    fin=st.integers(0, 6),
    fout=st.integers(0, 6),
    w_in=st.integers(0, 6),
    b_size=st.one_of(st.none(), st.integers(0, 6)),
    relu=st.booleans(),
    dtype=st.sampled_from([f32, f64]),
    seed=st.integers(0, 2**16),
)
def test_generated_linear(n, fin, fout, w_in, b_size, relu, dtype, seed):
    x, w = arr(n, fin, dtype=dtype, seed=seed), arr(fout, w_in, dtype=dtype, seed=seed + 1)
    b = None if b_size is None else arr(b_size, dtype=dtype, seed=seed + 2)
    rtol = 1e-5 if dtype == f32 else 1e-10
    assert_same_outcome(
        lambda: cpu.linear_forward(x, w, b, relu=relu),
        lambda: ref.linear_forward(x, w, b, relu=relu),
        rtol,
    )
    try:
        y = ref.linear_forward(x, w, b, relu=relu)
    except (ValueError, TypeError):
        return
    dy = arr(*y.shape, dtype=dtype, seed=seed + 3)
    assert_same_outcome(
        lambda: cpu.linear_backward(x, w, y, dy, relu=relu),
        lambda: ref.linear_backward(x, w, y, dy, relu=relu),
        rtol,
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(0, 2),
    c=st.integers(0, 2),
    h=st.integers(0, 7),
    w=st.integers(0, 7),
    co=st.integers(0, 3),
    kernel=st.integers(0, 5),
    stride=st.integers(-1, 3),
    padding=st.integers(-1, 2),
    relu=st.booleans(),
    dtype=st.sampled_from([f32, f64]),
    seed=st.integers(0, 2**16),
)
def test_generated_conv2d(n, c, h, w, co, kernel, stride, padding, relu, dtype, seed):
    x = arr(n, c, h, w, dtype=dtype, seed=seed)
    wt = arr(co, c, kernel, kernel, dtype=dtype, seed=seed + 1)
    b = arr(co, dtype=dtype, seed=seed + 2)
    rtol = 1e-5 if dtype == f32 else 1e-10
    assert_same_outcome(
        lambda: cpu.conv2d_forward(x, wt, b, stride, padding, relu=relu),
        lambda: ref.conv2d_forward(x, wt, b, stride, padding, relu=relu),
        rtol,
    )
    try:
        y = ref.conv2d_forward(x, wt, b, stride, padding, relu=relu)
    except (ValueError, TypeError):
        return
    dy = arr(*y.shape, dtype=dtype, seed=seed + 3)
    assert_same_outcome(
        lambda: cpu.conv2d_backward(x, wt, y, dy, stride, padding, relu=relu),
        lambda: ref.conv2d_backward(x, wt, y, dy, stride, padding, relu=relu),
        rtol,
    )
