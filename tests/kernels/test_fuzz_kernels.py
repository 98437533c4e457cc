"""Fuzzing every cpu kernel: generated shapes, strides, paddings, dtypes (float16, ints,
big-endian), memory layouts (Fortran, strided, negative strides, unaligned, read-only, 0-size
dimensions), labels up to 2**62 and negative, argmax garbage. Every call must give the NumPy
reference's answer or raise the same ValueError / TypeError; outputs passed with out= must be
used or refused with ValueError / TypeError.

The compiled modules under fastnn._kernels are fuzzed directly as well, in a subprocess, so that
a crash there fails one test instead of killing pytest.
"""

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastnn_testing
from fastnn import backends
from fastnn import validation as check
from fastnn.backends.numpy import NumpyBackend
from fastnn_testing import assert_matches

cpu = backends.get("cpu")
ref = NumpyBackend()

fuzz = settings(
    max_examples=int(os.environ.get("FASTNN_FUZZ_EXAMPLES", 80)),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)

FLOATS = [np.float32, np.float64]
# dtypes every kernel refuses with TypeError (big-endian float32 is still float32 by name)
BAD_DTYPES = [
    np.float16,
    np.int32,
    np.int64,
    np.uint8,
    np.bool_,
    np.complex64,
    np.dtype(">f4"),
    np.dtype(">f8"),
    np.longdouble,
]
LAYOUTS = ["C", "C", "C", "F", "strided", "reversed", "readonly", "unaligned", "broadcast"]


def relayout(a, layout):
    """The same values as `a` in another memory layout."""
    a = np.asarray(a)
    if layout == "C" or a.ndim == 0:
        return np.array(a, order="C")
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":  # every other element of a wider array
        wide = np.zeros((*a.shape[:-1], 2 * a.shape[-1] + 1), a.dtype)
        wide[..., 1::2] = a
        return wide[..., 1::2]
    if layout == "reversed":  # a view with a negative stride on the first axis
        return np.array(a[::-1], order="C")[::-1]
    if layout == "readonly":
        a = np.array(a, order="C")
        a.flags.writeable = False
        return a
    if layout == "unaligned":  # C-contiguous but not aligned to the element size
        raw = np.zeros(a.nbytes + 1, np.uint8)
        u = raw[1:].view(np.uint8)
        u = np.frombuffer(u, dtype=a.dtype, count=a.size) if a.size else np.empty(0, a.dtype)
        u = u.reshape(a.shape)
        u[...] = a
        return u
    if layout == "broadcast":  # a zero stride where the values allow it
        if a.shape and a.shape[0] > 0 and (a == a[:1]).all():
            return np.broadcast_to(a[:1], a.shape)
        return np.array(a, order="C")
    raise AssertionError(layout)


@st.composite
def arrays(draw, shape, dtype, *, scale=1.0, special=True):
    """An array of `shape` and `dtype` (sometimes a bad dtype) in a random layout, with a few
    NaN/inf values sometimes."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if draw(st.integers(0, 19)) == 0:
        dtype = draw(st.sampled_from(BAD_DTYPES))
    values = rng.standard_normal(shape) * scale
    if special and draw(st.integers(0, 29)) == 0 and values.size:
        values.flat[draw(st.integers(0, values.size - 1))] = draw(
            st.sampled_from([np.nan, np.inf, -np.inf])
        )
    if np.dtype(dtype).kind in "iub":
        values = values * 3
    with np.errstate(invalid="ignore", over="ignore"):
        a = values.astype(dtype)
    return relayout(a, draw(st.sampled_from(LAYOUTS)))


def outcome(call):
    try:
        return "ok", call()
    except (ValueError, TypeError) as exc:
        return type(exc), str(exc)


def as_tuple(value):
    return value if isinstance(value, tuple) else (value,)


def same_outcome(cpu_call, ref_call, rtol):
    """cpu gives the reference's answer, or the same exception type. Returns the result."""
    (kind, value), (ref_kind, ref_value) = outcome(cpu_call), outcome(ref_call)
    assert kind == ref_kind, (value, ref_value)
    if kind == "ok":
        # |error| <= rtol * (|expected| + max(1, max |expected|)), elementwise at worst
        assert_matches(value, ref_value, rtol=2 * rtol, floor=1.0)
        return value
    return None


def rtol_for(*arrays):
    kinds = {np.asarray(a).dtype for a in arrays if a is not None}
    return 1e-10 if kinds == {np.dtype(np.float64)} else 2e-4


def snapshot(*arrays):
    return [None if a is None else np.array(a, copy=True) for a in arrays]


def assert_unchanged(arrays, before):
    """Kernels never write into their inputs."""
    for a, b in zip(arrays, before):
        if a is not None and b is not None:
            np.testing.assert_array_equal(a, b)


# ---- linear -----------------------------------------------------------------------------------


@fuzz
@given(
    data=st.data(),
    n=st.integers(0, 6),
    fin=st.integers(0, 7),
    fout=st.integers(0, 7),
    w_in=st.one_of(st.none(), st.integers(0, 7)),
    with_bias=st.booleans(),
    relu=st.booleans(),
    dtype=st.sampled_from(FLOATS),
)
def test_linear(data, n, fin, fout, w_in, with_bias, relu, dtype):
    x = data.draw(arrays((n, fin), dtype))
    w = data.draw(arrays((fout, fin if w_in is None else w_in), dtype))
    b = data.draw(arrays((fout,), dtype)) if with_bias else None
    before = snapshot(x, w, b)
    y = same_outcome(
        lambda: cpu.linear_forward(x, w, b, relu),
        lambda: ref.linear_forward(x, w, b, relu),
        rtol_for(x, w, b),
    )
    assert_unchanged((x, w, b), before)
    if y is None:
        return
    y = relayout(y, data.draw(st.sampled_from(LAYOUTS)))
    dy = data.draw(arrays(y.shape, dtype))
    before = snapshot(x, w, y, dy)
    same_outcome(
        lambda: cpu.linear_backward(x, w, y, dy, relu),
        lambda: ref.linear_backward(x, w, y, dy, relu),
        rtol_for(x, w, dy),
    )
    assert_unchanged((x, w, y, dy), before)


# ---- conv2d -----------------------------------------------------------------------------------

huge = st.sampled_from([2**31 - 1, 2**31, 2**40, 2**63, 2**70])


@fuzz
@given(
    data=st.data(),
    n=st.integers(0, 3),
    c=st.integers(0, 3),
    h=st.integers(0, 9),
    w=st.integers(0, 9),
    co=st.integers(0, 4),
    kh=st.integers(0, 6),
    kw=st.integers(0, 6),
    w_c=st.one_of(st.none(), st.integers(0, 3)),
    stride=st.one_of(st.integers(-1, 4), huge, st.just(2.0)),
    padding=st.one_of(st.integers(-1, 3), st.just(2**31), st.just(True)),
    with_bias=st.booleans(),
    relu=st.booleans(),
    dtype=st.sampled_from(FLOATS),
)
def test_conv2d(data, n, c, h, w, co, kh, kw, w_c, stride, padding, with_bias, relu, dtype):
    x = data.draw(arrays((n, c, h, w), dtype))
    wt = data.draw(arrays((co, c if w_c is None else w_c, kh, kw), dtype, scale=0.3))
    b = data.draw(arrays((co,), dtype)) if with_bias else None
    before = snapshot(x, wt, b)
    y = same_outcome(
        lambda: cpu.conv2d_forward(x, wt, b, stride, padding, relu),
        lambda: ref.conv2d_forward(x, wt, b, stride, padding, relu),
        rtol_for(x, wt, b),
    )
    assert_unchanged((x, wt, b), before)
    if y is None:
        return
    y = relayout(y, data.draw(st.sampled_from(LAYOUTS)))
    dy = data.draw(arrays(y.shape, dtype))
    before = snapshot(x, wt, y, dy)
    same_outcome(
        lambda: cpu.conv2d_backward(x, wt, y, dy, stride, padding, relu),
        lambda: ref.conv2d_backward(x, wt, y, dy, stride, padding, relu),
        rtol_for(x, wt, dy),
    )
    assert_unchanged((x, wt, y, dy), before)


# ---- fused conv2d + max-pool (cpu only: compared with the reference's two kernels) -------------


def ref_conv_maxpool(x, w, b, stride, padding, relu, pool):
    """The reference's two kernels; the intermediate is not finite-checked (NaN weights give a
    NaN output, not an error about x)."""
    return ref.maxpool2d_forward(
        ref.conv2d_forward(x, w, b, stride, padding, relu), pool, check_finite=False
    )


def ref_conv_maxpool_backward(x, w, y, argmax, dy, stride, padding, relu, pool):
    conv_shape = ref.conv2d_forward(x, w, None, stride, padding, check_finite=False).shape
    dy = check.float_array("dy", dy, 4)  # as the fused kernel's wrapper takes it
    g = dy * (y > 0) if relu else dy
    dconv = ref.maxpool2d_backward(g, argmax, conv_shape, pool)
    return ref.conv2d_backward(x, w, dconv, dconv, stride, padding, False, check_finite=False)


@fuzz
@given(
    data=st.data(),
    n=st.integers(0, 3),
    c=st.sampled_from([0, 1, 1, 2, 4]),
    h=st.integers(0, 12),
    w=st.integers(0, 12),
    co=st.integers(1, 4),
    k=st.sampled_from([1, 3, 5, 5]),
    stride=st.sampled_from([1, 1, 2]),
    padding=st.integers(0, 2),
    pool=st.sampled_from([2, 2, 3, 0, 2**40]),
    with_bias=st.booleans(),
    relu=st.booleans(),
    dtype=st.sampled_from([np.float32, np.float32, np.float64]),
    garbage=st.sampled_from(["none", "none", "none", "values", "dtype"]),
)
def test_conv2d_maxpool(
    data, n, c, h, w, co, k, stride, padding, pool, with_bias, relu, dtype, garbage
):
    x = data.draw(arrays((n, c, h, w), dtype))
    wt = data.draw(arrays((co, c, k, k), dtype, scale=0.3))
    b = data.draw(arrays((co,), dtype)) if with_bias else None
    rtol = rtol_for(x, wt, b)
    result = same_outcome(
        lambda: cpu.conv2d_maxpool_forward(x, wt, b, stride, padding, relu, pool),
        lambda: ref_conv_maxpool(x, wt, b, stride, padding, relu, pool),
        rtol,
    )
    if result is None:
        return
    y, argmax = result
    dy = data.draw(arrays(y.shape, dtype))
    if garbage == "none":
        # the argmax of the reference's forward pass: ties may pick another (equal) maximum
        _, argmax = ref_conv_maxpool(x, wt, b, stride, padding, relu, pool)
        same_outcome(
            lambda: cpu.conv2d_maxpool_backward(x, wt, y, argmax, dy, stride, padding, relu, pool),
            lambda: ref_conv_maxpool_backward(x, wt, y, argmax, dy, stride, padding, relu, pool),
            rtol,
        )
        return
    if garbage == "values":  # the fused kernels may ignore entries outside their window
        values = data.draw(
            st.lists(st.integers(-(2**62), 2**62), min_size=argmax.size, max_size=argmax.size)
        )
        argmax = np.array(values, np.int64).reshape(argmax.shape)
    else:
        with np.errstate(invalid="ignore", over="ignore"):
            argmax = argmax.astype(data.draw(st.sampled_from(ARGMAX_DTYPES)))
    argmax = relayout(argmax, data.draw(st.sampled_from(LAYOUTS)))
    outcome(
        lambda: cpu.conv2d_maxpool_backward(x, wt, y, argmax, dy, stride, padding, relu, pool)
    )  # anything but a crash


# ---- max-pool ---------------------------------------------------------------------------------

ARGMAX_DTYPES = [np.int32, np.int32, np.int64, np.int8, np.uint16, np.uint64, np.float32, np.bool_]


@fuzz
@given(
    data=st.data(),
    n=st.integers(0, 3),
    c=st.integers(0, 3),
    h=st.integers(0, 8),
    w=st.integers(0, 8),
    kernel=st.one_of(st.integers(-1, 5), huge),
    stride=st.one_of(st.none(), st.integers(-1, 4), huge),
    dtype=st.sampled_from(FLOATS),
    garbage=st.sampled_from(["none", "none", "values", "dtype", "shape"]),
)
def test_maxpool(data, n, c, h, w, kernel, stride, dtype, garbage):
    x = data.draw(arrays((n, c, h, w), dtype))
    before = snapshot(x)
    result = same_outcome(
        lambda: cpu.maxpool2d_forward(x, kernel, stride),
        lambda: ref.maxpool2d_forward(x, kernel, stride),
        0,
    )
    assert_unchanged((x,), before)
    if result is None:
        return
    y, argmax = result
    if garbage == "values":  # indices anywhere, including far outside the plane
        values = data.draw(
            st.lists(
                st.integers(-(2**62), 2**62) | st.integers(-3, h * w + 3),
                min_size=argmax.size,
                max_size=argmax.size,
            )
        )
        argmax = np.array(values, np.int64).reshape(argmax.shape)
    elif garbage == "dtype":
        with np.errstate(invalid="ignore", over="ignore"):
            argmax = argmax.astype(data.draw(st.sampled_from(ARGMAX_DTYPES)))
    elif garbage == "shape":
        argmax = argmax.reshape(-1) if argmax.ndim else argmax
    argmax = relayout(argmax, data.draw(st.sampled_from(LAYOUTS)))
    x_shape = data.draw(
        st.sampled_from(
            [x.shape, x.shape, (n, c, h, w + 1), (n, c, h), (n, c, 2**31, w), [n, c, h, w]]
        )
    )
    dy = data.draw(arrays(y.shape, dtype))
    before = snapshot(dy, argmax)
    same_outcome(
        lambda: cpu.maxpool2d_backward(dy, argmax, x_shape, kernel, stride),
        lambda: ref.maxpool2d_backward(dy, argmax, x_shape, kernel, stride),
        0,
    )
    assert_unchanged((dy, argmax), before)


# ---- softmax cross-entropy --------------------------------------------------------------------

LABEL_DTYPES = [
    np.int64,
    np.int64,
    np.int32,
    np.int8,
    np.uint8,
    np.uint64,
    np.int16,
    np.float64,
    np.bool_,
    np.dtype(">i8"),
]
label_values = st.one_of(
    st.integers(-3, 12), st.integers(-(2**62), 2**62), st.integers(-(2**63), 2**64 - 1)
)


@fuzz
@given(
    data=st.data(),
    n=st.integers(0, 7),
    classes=st.integers(0, 11),
    labels=st.lists(label_values, max_size=8),
    label_dtype=st.sampled_from(LABEL_DTYPES),
    dtype=st.sampled_from(FLOATS),
)
def test_softmax_cross_entropy(data, n, classes, labels, label_dtype, dtype):
    logits = data.draw(arrays((n, classes), dtype, scale=8.0))
    if data.draw(st.booleans()):  # mostly valid labels, so the arithmetic is compared too
        labels = data.draw(st.lists(st.integers(0, max(classes - 1, 0)), min_size=n, max_size=n))
    kind = np.dtype(label_dtype)
    if kind.kind in "iu":
        info = np.iinfo(kind)
        labels = [v for v in labels if info.min <= v <= info.max]
    labels = relayout(np.array(labels, dtype=label_dtype), data.draw(st.sampled_from(LAYOUTS)))
    before = snapshot(logits, labels)
    same_outcome(
        lambda: cpu.softmax_cross_entropy(logits, labels),
        lambda: ref.softmax_cross_entropy(logits, labels),
        rtol_for(logits),
    )
    assert_unchanged((logits, labels), before)


# ---- optimizer steps --------------------------------------------------------------------------

reals = st.one_of(
    st.floats(-1, 2),
    st.sampled_from([0.0, 1e-300, 1e300, np.nan, np.inf, -0.0]),
    st.integers(-1, 2),
    st.just("0.1"),
    st.just(None),
)


def writable_layouts():
    return st.sampled_from(["C", "C", "C", "F", "strided", "readonly", "unaligned"])


@fuzz
@given(
    data=st.data(),
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=3),
    lr=reals,
    momentum=reals,
    weight_decay=reals,
    nesterov=st.sampled_from([False, True, 1]),
    with_velocity=st.booleans(),
    dtype=st.sampled_from(FLOATS),
)
def test_sgd_step(data, shape, lr, momentum, weight_decay, nesterov, with_velocity, dtype):
    shape = tuple(shape)
    param = relayout(data.draw(arrays(shape, dtype, special=False)), data.draw(writable_layouts()))
    grad = data.draw(arrays(shape if data.draw(st.integers(0, 9)) else shape + (1,), dtype))
    velocity = (
        relayout(data.draw(arrays(shape, dtype, special=False)), data.draw(writable_layouts()))
        if with_velocity
        else None
    )
    p_ref, v_ref = snapshot(param, velocity)
    p_before, g_before, v_before = snapshot(param, grad, velocity)
    kwargs = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    kind, message = outcome(lambda: cpu.sgd_step(param, grad, velocity, **kwargs))
    if kind != "ok":  # refused: nothing was written
        assert_unchanged((param, velocity), (p_before, v_before))
        if not all(
            a.flags.writeable and a.flags.c_contiguous and a.flags.aligned
            for a in (param, velocity)
            if a is not None
        ):
            return  # the reference cannot be called on a copy of a refused output (a copy
            # is writeable, contiguous and aligned)
    ref_kind, _ = outcome(lambda: ref.sgd_step(p_ref, grad, v_ref, **kwargs))
    assert kind == ref_kind, message
    assert_unchanged((grad,), (g_before,))
    if kind == "ok":
        with np.errstate(all="ignore"):
            assert_matches(param, p_ref, rtol=2 * rtol_for(param), floor=1.0)
            if velocity is not None and momentum:
                assert_matches(velocity, v_ref, rtol=2 * rtol_for(param), floor=1.0)


@fuzz
@given(
    data=st.data(),
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=3),
    lr=reals,
    beta1=reals,
    beta2=reals,
    eps=reals,
    weight_decay=reals,
    step=st.one_of(st.integers(-1, 5), st.sampled_from([2**31, 2**62, 2**70, 1.0, True])),
    dtype=st.sampled_from(FLOATS),
)
def test_adam_step(data, shape, lr, beta1, beta2, eps, weight_decay, step, dtype):
    shape = tuple(shape)
    param, m = (
        relayout(data.draw(arrays(shape, dtype, special=False)), data.draw(writable_layouts()))
        for _ in range(2)
    )
    v = relayout(
        np.abs(data.draw(arrays(shape, dtype, special=False))), data.draw(writable_layouts())
    )
    grad = data.draw(arrays(shape, dtype))
    copies = snapshot(param, m, v)
    before = snapshot(param, grad, m, v)
    kwargs = dict(lr=lr, step=step, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    kind, message = outcome(lambda: cpu.adam_step(param, grad, m, v, **kwargs))
    if kind != "ok":
        assert_unchanged((param, m, v), (before[0], before[2], before[3]))
        if not all(
            a.flags.writeable and a.flags.c_contiguous and a.flags.aligned for a in (param, m, v)
        ):
            return
    with np.errstate(all="ignore"):
        ref_kind, _ = outcome(
            lambda: ref.adam_step(copies[0], grad, copies[1], copies[2], **kwargs)
        )
    assert kind == ref_kind, message
    assert_unchanged((grad,), (before[1],))
    if kind == "ok":
        for got, expected in zip((param, m, v), copies):
            with np.errstate(all="ignore"):
                assert_matches(got, expected, rtol=2 * rtol_for(param), floor=1.0)


# ---- out= arrays (cpu only) -------------------------------------------------------------------

OUT_KINDS = [
    "good",
    "good",
    "F",
    "strided",
    "readonly",
    "wrong_dtype",
    "wrong_shape",
    "overlap",
    "list",
    "unaligned",
]


def make_out(kind, shape, dtype, overlap_with):
    if kind == "good":
        return np.full(shape, np.nan, dtype)
    if kind in ("F", "strided", "readonly", "unaligned"):
        return relayout(np.zeros(shape, dtype), kind)
    if kind == "wrong_dtype":
        return np.zeros(shape, np.float64 if np.dtype(dtype) == np.float32 else np.float32)
    if kind == "wrong_shape":
        return np.zeros((*shape[:-1], shape[-1] + 1) if shape else (1,), dtype)
    if kind == "overlap":
        flat = overlap_with.reshape(-1)
        size = int(np.prod(shape))
        if flat.size >= size and overlap_with.dtype == dtype and size:
            return flat[:size].reshape(shape)
        return np.zeros(shape, dtype)
    if kind == "list":
        return np.zeros(shape, dtype).tolist()
    raise AssertionError(kind)


def check_out(call_with_out, call_plain, outs):
    """With out=, the result is the plain call's, written into (and returned as) the outs;
    or the call raises ValueError/TypeError. An out that overlaps an input must be refused."""
    kind, value = outcome(call_with_out)
    plain = call_plain()
    if kind != "ok":
        return
    for got, expected, out in zip(as_tuple(value), as_tuple(plain), outs):
        assert got is out
        np.testing.assert_array_equal(got, expected)


@fuzz
@given(
    data=st.data(),
    n=st.integers(1, 5),
    fin=st.integers(1, 6),
    fout=st.integers(1, 6),
    kinds=st.lists(st.sampled_from(OUT_KINDS), min_size=3, max_size=3),
    dtype=st.sampled_from(FLOATS),
)
def test_out_arrays(data, n, fin, fout, kinds, dtype):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x, w = (
        rng.standard_normal((n, fin)).astype(dtype),
        rng.standard_normal((fout, fin)).astype(dtype),
    )
    b = rng.standard_normal(fout).astype(dtype)
    out = make_out(kinds[0], (n, fout), dtype, x)
    check_out(
        lambda: cpu.linear_forward(x, w, b, True, out=out),
        lambda: cpu.linear_forward(x, w, b, True),
        [out],
    )
    y = cpu.linear_forward(x, w, b, True)
    dy = rng.standard_normal(y.shape).astype(dtype)
    outs = (
        make_out(kinds[0], x.shape, dtype, dy),
        make_out(kinds[1], w.shape, dtype, y),
        make_out(kinds[2], (fout,), dtype, w),
    )
    check_out(
        lambda: cpu.linear_backward(x, w, y, dy, True, out=outs),
        lambda: cpu.linear_backward(x, w, y, dy, True),
        outs,
    )
    logits = rng.standard_normal((n, fout)).astype(dtype)
    labels = rng.integers(0, fout, n)
    out = make_out(kinds[1], logits.shape, dtype, x)
    kind, value = outcome(lambda: cpu.softmax_cross_entropy(logits, labels, out=out))
    if kind == "ok":
        expected = cpu.softmax_cross_entropy(logits, labels)
        assert value[1] is out and value[0] == expected[0]
        np.testing.assert_array_equal(out, expected[1])
    xs = rng.standard_normal((n, 2, fin + 1, fout + 1)).astype(dtype)
    pooled = cpu.maxpool2d_forward(xs, 2)
    outs = (
        make_out(kinds[0], pooled[0].shape, dtype, xs),
        make_out(kinds[2], pooled[1].shape, np.int32, xs),
    )
    check_out(lambda: cpu.maxpool2d_forward(xs, 2, out=outs), lambda: pooled, outs)
    out = make_out(kinds[1], xs.shape, dtype, pooled[0])
    check_out(
        lambda: cpu.maxpool2d_backward(pooled[0], pooled[1], xs.shape, 2, out=out),
        lambda: cpu.maxpool2d_backward(pooled[0], pooled[1], xs.shape, 2),
        [out],
    )


def test_outputs_that_overlap_inputs_or_are_read_only_are_refused():
    x = np.ones((4, 3), np.float32)
    w = np.ones((3, 3), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        cpu.linear_forward(x, w, None, out=x)
    read_only = np.zeros((4, 3), np.float32)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        cpu.linear_forward(x, w, None, out=read_only)
    with pytest.raises(ValueError, match="writeable"):
        cpu.sgd_step(read_only, x, lr=0.1)
    unaligned = relayout(np.zeros((4, 3), np.float32), "unaligned")
    assert unaligned.flags.c_contiguous and not unaligned.flags.aligned
    with pytest.raises(ValueError, match="aligned"):
        cpu.linear_forward(x, w, None, out=unaligned)


def test_unaligned_inputs_are_copied_before_the_kernels_read_them():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((5, 7)).astype(np.float32), rng.standard_normal((3, 7))
    w = w.astype(np.float32)
    expected = cpu.linear_forward(x, w, None)
    np.testing.assert_array_equal(
        cpu.linear_forward(relayout(x, "unaligned"), relayout(w, "unaligned"), None), expected
    )
    labels = relayout(np.array([0, 2, 1, 1, 0]), "unaligned")
    assert not labels.flags.aligned
    assert (
        cpu.softmax_cross_entropy(expected, labels)[0]
        == cpu.softmax_cross_entropy(expected, np.array([0, 2, 1, 1, 0]))[0]
    )


# ---- the compiled modules, called directly, in a subprocess -----------------------------------

RAW_ERRORS = (ValueError, TypeError, OverflowError)


def raw_cases(d, dtype, rng):
    """Consistent arguments for every compiled entry point, from the small sizes in d."""

    def a(*shape, kind=dtype):
        return (rng.standard_normal(shape) * 3).astype(kind)

    n, c, h, w, co, k, s, p = (d[key] for key in "n c h w co k s p".split())
    t = max(s, 1)  # sizes of the outputs: s itself may be 0, for the kernels to refuse
    ho, wo = max((h + 2 * p - k) // t + 1, 0), max((w + 2 * p - k) // t + 1, 0)
    po, qo = max((h - k) // t + 1, 0), max((w - k) // t + 1, 0)

    def a32(*shape):
        return a(*shape, kind=np.float32)

    fo = max((h + 3 + 2 * p - k) // t + 1, 0) // 2
    fq = max((w + 3 + 2 * p - k) // t + 1, 0) // 2
    # valid labels and indices (spoiling may replace them with extreme ones)
    labels = rng.integers(0, max(co, 1), n).astype(np.int64)
    argmax = rng.integers(0, max(h * w, 1), (n * c, po * qo)).astype(np.int32)
    from fastnn._kernels import conv, dense, gemm, loss, optim, pool, runtime

    return {
        "linear_forward": (dense.linear_forward, [a(n, c), a(co, c), a(co), d["relu"], a(n, co)]),
        "linear_backward": (
            dense.linear_backward,
            [a(n, c), a(co, c), a(n, co), a(n, co), d["relu"], a(n, c), a(co, c), a(co), a(n, co)],
        ),
        "softmax_cross_entropy": (loss.softmax_cross_entropy, [a(n, co), labels, a(n, co)]),
        "maxpool_forward": (
            pool.maxpool_forward,
            [
                a(n * c, h * w),
                h,
                w,
                k,
                s,
                a(n * c, po * qo),
                np.zeros((n * c, po * qo), np.int32),
                po,
                qo,
            ],
        ),
        "maxpool_backward": (pool.maxpool_backward, [a(n * c, po * qo), argmax, a(n * c, h * w)]),
        "sgd_step": (optim.sgd_step, [a(n * c), a(n * c), a(n * c), 0.1, 0.9, 0.0, d["relu"]]),
        "adam_step": (
            optim.adam_step,
            [a(n * c), a(n * c), a(n * c), np.abs(a(n * c)), 0.1, 0.9, 0.99, 0.1, 0.01, 1e-8, 0.0],
        ),
        "conv_forward": (
            conv.forward,
            [a(n, c, h, w), a(co, c, k, k), a(co), a(n, co, ho, wo), s, p, d["relu"]],
        ),
        "conv_backward": (
            conv.backward,
            [
                a(n, c, h, w),
                a(co, c, k, k),
                a(n, co, ho, wo),
                a(n, co, ho, wo),
                a(n, c, h, w),
                a(co, c, k, k),
                a(co),
                s,
                p,
                d["relu"],
            ],
        ),
        # the fused kernels take float32 and one input channel (direct) or 5x5 (Winograd)
        "conv_forward_maxpool": (
            conv.forward_maxpool,
            [
                a32(n, 1, h + 3, w + 3),
                a32(co, 1, k, k),
                a32(co),
                a32(n, co, fo, fq),
                np.zeros((n, co, fo, fq), np.int32),
                s,
                p,
                d["relu"],
                2,
            ],
        ),
        "conv_backward_maxpool": (
            conv.backward_maxpool,
            [
                a32(n, 1, h + 3, w + 3),
                a32(co, 1, k, k),
                a32(n, co, fo, fq),
                rng.integers(0, max(fo * fq * 4, 1), (n, co, fo, fq)).astype(np.int32),
                a32(n, co, fo, fq),
                None,
                a32(co, 1, k, k),
                a32(co),
                s,
                p,
                d["relu"],
                2,
            ],
        ),
        "matmul": (gemm.matmul, [a(n, c), a(c, co), False, False, a(co), 1, d["relu"], a(n, co)]),
        "all_finite_bits": (
            runtime.all_finite_bits,
            [a(n * c).view(np.uint32 if dtype == np.float32 else np.uint64)],
        ),
    }


HOSTILE_INTS = [-1, 0, 2**31 - 1, 2**31, 2**63 - 1, -(2**63)]


SPOIL_DTYPES = [np.float32, np.float64, np.int32, np.int64, np.float16]
# Not "unaligned": these entry points take the backend's arrays, which it aligns (copying inputs,
# refusing outputs); a misaligned load is undefined behaviour (UBSan stops there), not a crash.
SPOIL_LAYOUTS = ["F", "strided", "reversed", "readonly"]
SPOIL_FLOATS = [0.0, -1.0, np.nan, np.inf, 1e300]


def spoiled(old, rng):
    """`old` (an argument) replaced by something hostile of about the same kind."""
    if isinstance(old, np.ndarray):
        how = rng.choice(["shape", "dtype", "layout", "none", "values"])
        if how == "shape":
            return np.ones(
                rng.integers(0, 5, rng.integers(max(old.ndim - 1, 0), old.ndim + 2)), old.dtype
            )
        if how == "dtype":
            return old.astype(SPOIL_DTYPES[rng.integers(len(SPOIL_DTYPES))])
        if how == "layout":
            return relayout(old, SPOIL_LAYOUTS[rng.integers(len(SPOIL_LAYOUTS))])
        if how == "none":
            return None
        if old.dtype.kind == "i":  # indices and labels far outside any range
            return rng.integers(-(2**40), 2**40, old.shape).astype(old.dtype)
        return np.full_like(old, SPOIL_FLOATS[rng.integers(len(SPOIL_FLOATS))])
    if isinstance(old, (bool, int)) or old is None:
        return HOSTILE_INTS[rng.integers(len(HOSTILE_INTS))]
    return SPOIL_FLOATS[rng.integers(len(SPOIL_FLOATS))]


def raw_kernel_fuzz(examples, seed=0):
    """Hostile arguments straight into fastnn._kernels: consistent arguments with up to two of
    them spoiled (another shape, dtype, layout, None, extreme values or integers). Any Python
    exception is fine, a crash is not; the case about to run is written to stderr first, so a
    crash names it. Returns {entry point: [calls that ran, refused, exceptions other than
    ValueError/TypeError/OverflowError]}."""
    from fastnn._kernels import conv

    stats = {}
    sizes = np.array([1, 2, 3, 4, 1, 2, 0])  # a 0 now and then
    for example in range(examples):
        rng = np.random.default_rng((seed, example))
        dims = {key: int(rng.choice(sizes)) for key in "n c h w co k s".split()}
        dims.update(p=int(rng.integers(0, 3)), relu=bool(rng.integers(2)))
        dtype = FLOATS[rng.integers(2)]
        cases = raw_cases(dims, dtype, rng)
        name = sorted(cases)[rng.integers(len(cases))]
        function, args = cases[name]
        for _ in range(rng.choice([0, 1, 1, 2])):
            i = rng.integers(len(args))
            args[i] = spoiled(args[i], rng)
        kwargs = {}
        if name.startswith("conv"):
            kwargs = dict(
                algorithm=conv.ALGORITHMS[rng.integers(len(conv.ALGORITHMS))],
                nthreads=int(rng.integers(0, 5)),
            )
        print(f"case {example} (seed {seed}): {name}", file=sys.stderr, flush=True)
        counts = stats.setdefault(name, [0, 0, []])
        try:
            function(*args, **kwargs)
            counts[0] += 1
        except RAW_ERRORS:
            counts[1] += 1
        except Exception as exc:  # private entry points: noted, but only a crash fails
            counts[1] += 1
            note = f"{type(exc).__name__}: {exc}"
            if note not in counts[2]:
                counts[2].append(note)
    return stats


def test_compiled_kernels_called_directly_never_crash():
    examples = int(os.environ.get("FASTNN_FUZZ_RAW_EXAMPLES", 2000))
    seed = int(os.environ.get("FASTNN_FUZZ_SEED", 0))
    stats = fastnn_testing.run_in_child(
        __file__, f"t.raw_kernel_fuzz({examples}, {seed})", timeout=900
    )
    # every entry point was reached and ran to completion at least once; many calls refused
    assert len(stats) == 13 and all(ran > 0 for ran, _, _ in stats.values()), stats
    assert sum(refused for _, refused, _ in stats.values()) > examples // 5, stats
