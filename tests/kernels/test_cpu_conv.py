"""conv2d kernels (fastnn._kernels.conv) against the NumPy reference, forward and backward.

Every algorithm is checked on every shape it accepts: "gemm" (im2col + GEMM, any shape,
float32 and float64), "winograd" (5x5, stride 1, float32) and "direct" (one input channel,
stride 1, float32; dW and db only), the last two on their AVX2 and their portable builds.
GEMM and direct sum the same products as the reference, so it must agree to 1e-5 of the
result's norm (float32) or 1e-10 (float64). Winograd's rounding error scales with the sizes of
the products, not with their sum, so on these small random problems it is held to 1e-5 of the
norm of the same convolution of absolute values (|x| and |w|, |dy|), which bounds the
result's; `auto` uses it only on problems big enough for the result's norm to be of that size
(checked on the CNN's conv2 below).
"""

import numpy as np
import pytest

from fastnn.backends.numpy import NumpyBackend

conv = pytest.importorskip("fastnn._kernels.conv")

REF = NumpyBackend()
TOL = {np.float32: 1e-5, np.float64: 1e-10}

# (n, ci, h, w, co, k, stride, padding)
SHAPES = [
    (1, 1, 5, 5, 1, 5, 1, 0),  # batch 1, kernel the size of the input
    (1, 2, 3, 3, 3, 5, 1, 1),  # kernel the size of the padded input
    (2, 3, 7, 7, 5, 5, 1, 0),
    (3, 5, 11, 13, 7, 5, 1, 2),  # primes, padding 2, non-square
    (2, 1, 28, 28, 6, 5, 1, 2),  # LeNet conv1
    (2, 6, 14, 14, 16, 5, 1, 0),  # LeNet conv2
    (3, 32, 12, 12, 64, 5, 1, 0),  # mnist_cnn conv2
    (5, 9, 10, 9, 11, 5, 1, 1),  # 9 input channels: one full and one partial block of 8
    (2, 3, 9, 8, 4, 3, 2, 1),  # stride 2
    (1, 3, 4, 4, 2, 4, 3, 2),  # stride 3, kernel 4
    (3, 4, 6, 7, 5, 1, 1, 0),  # 1x1 pointwise
    (2, 2, 5, 6, 3, 1, 2, 1),  # 1x1 with stride and padding
    (7, 3, 8, 8, 2, 2, 1, 0),  # kernel 2, batch prime
    (2, 5, 6, 5, 3, 3, 3, 0),  # stride 3
    (1, 1, 1, 1, 1, 3, 1, 1),  # 1x1 input, 3x3 kernel, padding 1
    (3, 1, 28, 28, 32, 5, 1, 0),  # mnist_cnn conv1
    (2, 1, 19, 41, 7, 3, 1, 1),  # one channel, rows of 41: vectors plus a tail
    (2, 1, 6, 5, 3, 1, 1, 2),  # one channel, 1x1 kernel, padding 2
    (5, 1, 12, 11, 7, 5, 1, 0),  # one channel, 5x5, rows of 7 (one vector), 7 channels
    (3, 1, 30, 34, 13, 5, 1, 1),  # one channel, 5x5, rows of 32 (the widest AVX-512 kernel)
]

ISAS = ("avx512", "avx2", "portable")


def fits(algorithm, shape, dtype):
    ci, k, stride = shape[1], shape[5], shape[6]
    if algorithm == "winograd":
        return k == 5 and stride == 1 and dtype == np.float32
    return ci == 1 and stride == 1 and dtype == np.float32


def cases():
    for shape in SHAPES:
        for dtype in (np.float32, np.float64):
            yield pytest.param(shape, dtype, "gemm", id=f"gemm-{dtype.__name__}-{shape}")
            for algorithm in ("winograd", "direct"):
                if fits(algorithm, shape, dtype):
                    for isa in ISAS if algorithm == "direct" else ISAS[1:]:
                        yield pytest.param(
                            shape, dtype, f"{algorithm}-{isa}", id=f"{algorithm}-{isa}-{shape}"
                        )


@pytest.fixture
def conv_isa():
    """Select the direct/Winograd kernels' build for one test (skipped where the CPU lacks it)
    and restore the default after."""

    def select(isa):
        if conv._set_isa(isa) != isa:
            pytest.skip(f"this CPU does not run the {isa} kernels")

    yield select
    conv._set_isa(None)


def make(shape, dtype, seed=0):
    n, ci, h, w, co, k, stride, padding = shape
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, ci, h, w)).astype(dtype)
    wt = (rng.standard_normal((co, ci, k, k)) / np.sqrt(ci * k * k)).astype(dtype)
    b = rng.standard_normal(co).astype(dtype)
    ho = (h + 2 * padding - k) // stride + 1
    wo = (w + 2 * padding - k) // stride + 1
    dy = rng.standard_normal((n, co, ho, wo)).astype(dtype)
    return x, wt, b, dy


def rel_err(a, ref):
    scale = np.linalg.norm(ref)
    return np.linalg.norm(a.astype(np.float64) - ref) / (scale if scale else 1.0)


def scaled_err(a, ref, scale_ref):
    """|a - ref| relative to the norm of the problem's absolute-value version."""
    return np.linalg.norm(a.astype(np.float64) - ref) / np.linalg.norm(scale_ref)


def run(x, w, b, dy, stride, padding, relu, algorithm, need_dx=True, nthreads=0):
    co = w.shape[0]
    y = np.full(dy.shape, np.nan, x.dtype)
    conv.forward(x, w, b, y, stride, padding, relu, algorithm=algorithm, nthreads=nthreads)
    dx = np.full(x.shape, np.nan, x.dtype) if need_dx else None
    dw = np.full(w.shape, np.nan, x.dtype)
    db = np.full(co, np.nan, x.dtype)
    conv.backward(
        x, w, y, dy, dx, dw, db, stride, padding, relu, algorithm=algorithm, nthreads=nthreads
    )
    return y, dx, dw, db


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("shape, dtype, algorithm", list(cases()))
def test_matches_reference(shape, dtype, algorithm, relu, conv_isa):
    stride, padding = shape[6], shape[7]
    if "-" in algorithm:
        algorithm, isa = algorithm.split("-")
        conv_isa(isa)
    x, w, b, dy = make(shape, dtype)
    need_dx = algorithm != "direct"
    y, dx, dw, db = run(x, w, b, dy, stride, padding, relu, algorithm, need_dx=need_dx)
    y_ref = REF.conv2d_forward(x, w, b, stride, padding, relu)
    dx_ref, dw_ref, db_ref = REF.conv2d_backward(x, w, y_ref, dy, stride, padding, relu)
    tol = TOL[dtype]
    if not need_dx:
        assert dx is None
        dx = dx_ref
    if algorithm == "winograd":
        y_abs = REF.conv2d_forward(abs(x), abs(w), abs(b), stride, padding)
        dx_abs, dw_abs, db_abs = REF.conv2d_backward(
            abs(x), abs(w), y_abs, abs(dy), stride, padding
        )
        assert scaled_err(y, y_ref, y_abs) < tol
        assert scaled_err(dx, dx_ref, dx_abs) < tol
        assert scaled_err(dw, dw_ref, dw_abs) < tol
        assert rel_err(db, db_ref) < tol  # db is a plain sum of dy in both algorithms
        return
    assert rel_err(y, y_ref) < tol
    assert rel_err(dx, dx_ref) < tol
    assert rel_err(dw, dw_ref) < tol
    assert rel_err(db, db_ref) < tol


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_winograd_on_the_cnn_layer_matches_to_1e5_of_the_result(relu):
    """mnist_cnn's conv2 at batch 16, where `auto` runs Winograd: plain relative error."""
    x, w, b, dy = make((16, 32, 12, 12, 64, 5, 1, 0), np.float32, seed=7)
    assert conv.choose(x.shape, w.shape, x.dtype, 1, 0) == "winograd"
    y, dx, dw, db = run(x, w, b, dy, 1, 0, relu, "auto")
    y_ref = REF.conv2d_forward(x, w, b, 1, 0, relu)
    dx_ref, dw_ref, db_ref = REF.conv2d_backward(x, w, y_ref, dy, 1, 0, relu)
    for got, ref in ((y, y_ref), (dx, dx_ref), (dw, dw_ref), (db, db_ref)):
        assert rel_err(got, ref) < 1e-5


@pytest.mark.parametrize("algorithm", ["gemm", "winograd"])
def test_relu_masks_where_output_is_not_positive(algorithm):
    """With relu, the gradient flows only where the forward output was > 0."""
    x, w, b, dy = make((2, 4, 9, 9, 6, 5, 1, 1), np.float32, seed=3)
    b[:] = 0
    y, dx, dw, db = run(x, w, b, dy, 1, 1, True, algorithm)
    assert (y >= 0).all() and (y == 0).any() and (y > 0).any()
    _, dx_lin, dw_lin, db_lin = run(x, w, b, dy * (y > 0), 1, 1, False, algorithm)
    np.testing.assert_allclose(db, db_lin, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dw, dw_lin, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dx, dx_lin, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("algorithm", ["gemm", "winograd"])
def test_without_bias_and_without_dx(algorithm):
    x, w, _, dy = make((3, 4, 8, 8, 5, 5, 1, 2), np.float32, seed=4)
    y, dx, dw, db = run(x, w, None, dy, 1, 2, False, algorithm, need_dx=False)
    y_ref = REF.conv2d_forward(x, w, np.zeros(5, np.float32), 1, 2)
    _, dw_ref, db_ref = REF.conv2d_backward(x, w, y_ref, dy, 1, 2)
    assert dx is None
    assert rel_err(y, y_ref) < 1e-5
    assert rel_err(dw, dw_ref) < 1e-5
    assert rel_err(db, db_ref) < 1e-5


@pytest.mark.parametrize(
    "shape, dtype, algorithm",
    [
        ((7, 3, 9, 9, 5, 3, 1, 1), np.float64, "gemm"),
        ((9, 1, 12, 13, 11, 5, 1, 2), np.float32, "direct"),
        ((9, 2, 10, 10, 4, 3, 2, 0), np.float32, "gemm"),
        ((9, 32, 12, 12, 16, 5, 1, 0), np.float32, "winograd"),
        ((13, 6, 14, 14, 16, 5, 1, 2), np.float32, "winograd"),
    ],
)
def test_same_bits_at_any_thread_count(shape, dtype, algorithm):
    """The batch sums (dW, db) use a fixed partition and order: 1, 2 and 3 threads agree
    bit for bit, and so do repeated calls."""
    x, w, b, dy = make(shape, dtype, seed=5)
    stride, padding = shape[6], shape[7]
    results = [
        run(
            x, w, b, dy, stride, padding, True, algorithm, nthreads=t, need_dx=algorithm != "direct"
        )
        for t in (1, 2, 3, 2)
    ]
    for other in results[1:]:
        for a, ref in zip(other, results[0]):
            assert (a is None and ref is None) or np.array_equal(a, ref)


def test_direct_backward_with_dx_runs_gemm():
    """The direct kernels compute no dx: `auto` then runs GEMM; forcing direct refuses."""
    x, w, b, dy = make((2, 1, 9, 9, 4, 3, 1, 1), np.float32, seed=8)
    assert conv.choose(x.shape, w.shape, x.dtype, 1, 1) == "direct"
    y, dx, dw, db = run(x, w, b, dy, 1, 1, True, "auto")
    y_ref = REF.conv2d_forward(x, w, b, 1, 1, True)
    dx_ref, dw_ref, db_ref = REF.conv2d_backward(x, w, y_ref, dy, 1, 1, True)
    for got, ref in ((y, y_ref), (dx, dx_ref), (dw, dw_ref), (db, db_ref)):
        assert rel_err(got, ref) < 1e-5
    with pytest.raises(ValueError, match="no dx"):
        conv.backward(x, w, y, dy, np.empty_like(x), dw, db, 1, 1, True, algorithm="direct")


def test_choose_picks_winograd_only_where_it_applies():
    assert conv.choose((128, 32, 12, 12), (64, 32, 5, 5), np.float32, 1, 0) == "winograd"
    assert conv.choose((128, 1, 28, 28), (32, 1, 5, 5), np.float32, 1, 0) == "direct"
    assert conv.choose((128, 1, 28, 28), (32, 1, 5, 5), np.float64, 1, 0) == "gemm"
    assert conv.choose((128, 1, 28, 28), (32, 1, 5, 5), np.float32, 2, 0) == "gemm"
    assert conv.choose((128, 32, 12, 12), (64, 32, 5, 5), np.float64, 1, 0) == "gemm"
    assert conv.choose((128, 32, 12, 12), (64, 32, 5, 5), np.float32, 2, 0) == "gemm"
    assert conv.choose((128, 32, 12, 12), (64, 32, 3, 3), np.float32, 1, 1) == "gemm"
    assert conv.choose((1, 32, 12, 12), (64, 32, 5, 5), np.float32, 1, 0) == "winograd"
    assert conv.choose((1, 32, 10, 10), (64, 32, 5, 5), np.float32, 1, 0) == "gemm"  # tiny
    assert conv.choose((128, 2, 12, 12), (64, 2, 5, 5), np.float32, 1, 0) == "gemm"
    with pytest.raises(ValueError, match="winograd"):
        conv.choose((1, 2, 8, 8), (2, 2, 3, 3), np.float32, 1, 0, "winograd")
    with pytest.raises(ValueError, match="algorithm"):
        conv.choose((1, 2, 8, 8), (2, 2, 3, 3), np.float32, 1, 0, "fft")


@pytest.mark.parametrize("algorithm", ["gemm", "winograd"])
def test_explicit_workspace(algorithm):
    x, w, b, dy = make((2, 4, 8, 8, 3, 5, 1, 0), np.float32, seed=6)
    y = np.empty(dy.shape, np.float32)
    size = conv.workspace_size("forward", x.shape, w.shape, x.dtype, 1, 0, algorithm)
    conv.forward(x, w, b, y, 1, 0, False, algorithm=algorithm, workspace=np.empty(size, np.float32))
    assert rel_err(y, REF.conv2d_forward(x, w, b, 1, 0)) < 1e-5
    with pytest.raises(ValueError, match="at least"):
        conv.forward(
            x, w, b, y, 1, 0, False, algorithm=algorithm, workspace=np.empty(size - 1, np.float32)
        )
    with pytest.raises(TypeError, match="workspace must be float32"):
        conv.forward(
            x, w, b, y, 1, 0, False, algorithm=algorithm, workspace=np.empty(size, np.float64)
        )


def test_refuses_inconsistent_arrays():
    """The kernel module refuses what would read or write out of bounds (the backend gives
    the friendlier messages; see the backend tests)."""
    x, w, b, dy = make((2, 3, 8, 8, 4, 3, 1, 0), np.float32)
    y = np.empty(dy.shape, np.float32)
    with pytest.raises(ValueError, match="y must have shape"):
        conv.forward(x, w, b, y[:, :, :-1].copy(), 1, 0, False)
    with pytest.raises(TypeError, match="C-contiguous float32"):
        conv.forward(x, w, b.astype(np.float64), y, 1, 0, False)
    with pytest.raises(ValueError, match="do not make a convolution"):
        conv.forward(x, w[:, :2].copy(), b, y, 1, 0, False)
    with pytest.raises(ValueError, match="does not fit"):
        conv.forward(x, np.zeros((4, 3, 9, 9), np.float32), b, y, 1, 0, False)
    with pytest.raises(ValueError, match="dw must have shape"):
        conv.backward(
            x,
            w,
            y,
            dy,
            None,
            np.empty((4, 3, 3, 2), np.float32),
            np.empty(4, np.float32),
            1,
            0,
            False,
        )


# ---- conv2d + ReLU + max-pool, fused -------------------------------------------------------------

# (n, ci, h, w, co, k, padding, pool); stride 1
FUSED_SHAPES = [
    (3, 1, 28, 28, 32, 5, 0, 2),  # mnist_cnn conv1 + pool
    (2, 1, 28, 28, 6, 5, 2, 2),  # LeNet conv1 + pool
    (3, 32, 12, 12, 64, 5, 0, 2),  # mnist_cnn conv2 + pool
    (2, 6, 14, 14, 16, 5, 0, 2),  # LeNet conv2 + pool
    (2, 1, 9, 10, 3, 3, 0, 2),  # odd conv output: the last row is in no window
    (2, 1, 27, 41, 5, 3, 1, 2),  # wide rows: vectors plus an overlapping tail
    (2, 3, 11, 13, 5, 5, 1, 3),  # pool 3
    (1, 9, 6, 7, 3, 5, 2, 1),  # pool 1
    (5, 1, 14, 17, 7, 5, 1, 3),  # one channel, 5x5, pool 3, 7 channels
    (3, 1, 12, 13, 5, 5, 0, 2),  # one channel, 5x5, rows of 9 (one vector), odd width
]


def fused_reference(x, w, b, padding, relu, pool, dyp, argmax):
    """The reference's conv2d + maxpool2d, forward; backward through the given argmax."""
    y_conv = REF.conv2d_forward(x, w, b, 1, padding, relu)
    y_ref, argmax_ref = REF.maxpool2d_forward(y_conv, pool)
    dconv = REF.maxpool2d_backward(dyp, argmax, y_conv.shape, pool)
    grads = REF.conv2d_backward(x, w, y_conv, dconv, 1, padding, relu)
    return y_conv, y_ref, argmax_ref, grads


def run_fused(x, w, b, dyp_shape, padding, relu, pool, nthreads=0, seed=0):
    algorithm = conv.choose(x.shape, w.shape, x.dtype, 1, padding)
    if algorithm == "gemm":
        algorithm = "winograd"
    y = np.full(dyp_shape, np.nan, x.dtype)
    argmax = np.full(dyp_shape, -1, np.int32)
    conv.forward_maxpool(
        x, w, b, y, argmax, 1, padding, relu, pool, algorithm=algorithm, nthreads=nthreads
    )
    dyp = np.random.default_rng(seed).standard_normal(dyp_shape).astype(x.dtype)
    dx = np.full(x.shape, np.nan, x.dtype) if algorithm != "direct" else None
    dw, db = np.full(w.shape, np.nan, x.dtype), np.full(w.shape[0], np.nan, x.dtype)
    conv.backward_maxpool(
        x,
        w,
        y,
        argmax,
        dyp,
        dx,
        dw,
        db,
        1,
        padding,
        relu,
        pool,
        algorithm=algorithm,
        nthreads=nthreads,
    )
    return algorithm, y, argmax, dyp, dx, dw, db


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("shape", FUSED_SHAPES, ids=str)
def test_fused_maxpool_matches_conv_then_pool(shape, relu, isa, conv_isa):
    conv_isa(isa)
    n, ci, h, wd, co, k, padding, pool = shape
    x, w, b, _ = make((n, ci, h, wd, co, k, 1, padding), np.float32, seed=9)
    ho, wo = h + 2 * padding - k + 1, wd + 2 * padding - k + 1
    pooled = (n, co, ho // pool, wo // pool)
    algorithm, y, argmax, dyp, dx, dw, db = run_fused(x, w, b, pooled, padding, relu, pool)
    y_conv, y_ref, argmax_ref, (dx_ref, dw_ref, db_ref) = fused_reference(
        x, w, b, padding, relu, pool, dyp, argmax
    )
    assert rel_err(y, y_ref) < 1e-5
    # each argmax lies in its own window and holds that window's maximum
    planes = y_conv.reshape(n * co, -1)
    rows, cols = np.divmod(argmax.reshape(n * co, -1), wo)
    pr, pc = np.divmod(np.arange(pooled[2] * pooled[3]), pooled[3])
    assert ((rows // pool == pr) & (cols // pool == pc)).all()
    at_argmax = np.take_along_axis(planes, argmax.reshape(n * co, -1), axis=1)
    np.testing.assert_allclose(at_argmax, y_ref.reshape(n * co, -1), rtol=1e-5, atol=1e-5)
    if algorithm == "direct":  # the same products as the reference: the same maxima
        assert np.array_equal(argmax, argmax_ref)
    assert rel_err(dw, dw_ref) < 1e-5
    assert rel_err(db, db_ref) < 1e-5
    if dx is not None:
        assert rel_err(dx, dx_ref) < 1e-5


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("shape", FUSED_SHAPES, ids=str)
def test_fused_maxpool_same_bits_as_the_two_kernels(shape, relu, isa, conv_isa):
    """A model may run either path (fused where the shapes allow): the numbers must not move."""
    from fastnn._kernels import pool as pool_kernels

    conv_isa(isa)
    n, ci, h, wd, co, k, padding, pool = shape
    x, w, b, _ = make((n, ci, h, wd, co, k, 1, padding), np.float32, seed=12)
    ho, wo = h + 2 * padding - k + 1, wd + 2 * padding - k + 1
    pooled = (n, co, ho // pool, wo // pool)
    algorithm, y, argmax, dyp, dx, dw, db = run_fused(x, w, b, pooled, padding, relu, pool)
    y_conv = np.empty((n, co, ho, wo), np.float32)
    conv.forward(x, w, b, y_conv, 1, padding, relu, algorithm=algorithm)
    y2, argmax2 = np.empty(pooled, np.float32), np.empty(pooled, np.int32)
    planes = (n * co, -1)
    pool_kernels.maxpool_forward(
        y_conv.reshape(planes),
        ho,
        wo,
        pool,
        pool,
        y2.reshape(planes),
        argmax2.reshape(planes),
        pooled[2],
        pooled[3],
    )
    assert np.array_equal(y, y2) and np.array_equal(argmax, argmax2)
    dconv = np.zeros_like(y_conv)
    pool_kernels.maxpool_backward(
        dyp.reshape(planes), argmax.reshape(planes), dconv.reshape(planes)
    )
    dx2 = None if dx is None else np.empty_like(x)
    dw2, db2 = np.empty_like(w), np.empty_like(b)
    conv.backward(x, w, y_conv, dconv, dx2, dw2, db2, 1, padding, relu, algorithm=algorithm)
    assert dx is None or np.array_equal(dx, dx2)
    assert np.array_equal(dw, dw2) and np.array_equal(db, db2)


@pytest.mark.parametrize(
    "shape", [(7, 1, 20, 20, 12, 5, 0, 2), (9, 8, 12, 12, 16, 5, 1, 2)], ids=str
)
def test_fused_maxpool_same_bits_at_any_thread_count(shape):
    n, ci, h, wd, co, k, padding, pool = shape
    x, w, b, _ = make((n, ci, h, wd, co, k, 1, padding), np.float32, seed=10)
    ho = h + 2 * padding - k + 1
    pooled = (n, co, ho // pool, ho // pool)
    results = [run_fused(x, w, b, pooled, padding, True, pool, nthreads=t)[1:] for t in (1, 2, 3)]
    for other in results[1:]:
        for a, ref in zip(other, results[0]):
            assert (a is None and ref is None) or np.array_equal(a, ref)


def test_fused_maxpool_ignores_an_argmax_outside_its_window():
    """A wrong argmax cannot make the kernel write out of place: that window's gradient is
    dropped."""
    x, w, b, _ = make((2, 1, 12, 12, 4, 5, 1, 0), np.float32, seed=11)
    pooled = (2, 4, 4, 4)
    _, y, argmax, dyp, _, dw, db = run_fused(x, w, b, pooled, 0, False, 2)
    bad = argmax.copy()
    bad[1, 2, 3, 3] = 0  # a real index of the plane, in another window
    bad[0, 1, 0, 0] = 10**6  # not an index of the plane at all
    dw2, db2 = np.empty_like(dw), np.empty_like(db)
    conv.backward_maxpool(x, w, y, bad, dyp, None, dw2, db2, 1, 0, False, 2)
    dropped = dyp.copy()
    dropped[1, 2, 3, 3] = dropped[0, 1, 0, 0] = 0
    dw3, db3 = np.empty_like(dw), np.empty_like(db)
    conv.backward_maxpool(x, w, y, argmax, dropped, None, dw3, db3, 1, 0, False, 2)
    np.testing.assert_allclose(dw2, dw3, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db2, db3, rtol=1e-6, atol=1e-7)


def test_fusable():
    f32 = np.float32
    assert conv.fusable((128, 1, 28, 28), (32, 1, 5, 5), f32, 1, 0, 2, need_dx=False)
    assert not conv.fusable((128, 1, 28, 28), (32, 1, 5, 5), f32, 1, 0, 2, need_dx=True)
    assert conv.fusable((128, 32, 12, 12), (64, 32, 5, 5), f32, 1, 0, 2)
    assert not conv.fusable((128, 32, 12, 12), (64, 32, 5, 5), np.float64, 1, 0, 2)
    assert not conv.fusable((128, 32, 12, 12), (64, 32, 3, 3), f32, 1, 0, 2)
    assert not conv.fusable((128, 32, 12, 12), (64, 32, 5, 5), f32, 1, 0, 9)
    with pytest.raises(ValueError, match="fused max-pool needs"):
        conv.forward_maxpool(
            *[np.zeros(s, f32) for s in ((1, 2, 8, 8), (2, 2, 3, 3), (2,))],
            np.zeros((1, 2, 3, 3), f32),
            np.zeros((1, 2, 3, 3), np.int32),
            1,
            0,
            False,
            2,
            algorithm="gemm",
        )


# ---- the cpu backend's fused methods ---------------------------------------------------------


@pytest.mark.parametrize(
    "dtype, shape, stride",
    [
        (np.float32, (3, 1, 28, 28, 8, 5, 0, 2), 1),  # fused (direct)
        (np.float32, (3, 6, 14, 14, 16, 5, 0, 2), 1),  # fused (winograd)
        (np.float64, (2, 3, 10, 10, 4, 3, 1, 2), 1),  # not fused: float64
        (np.float32, (2, 3, 13, 13, 4, 3, 1, 2), 2),  # not fused: stride 2
    ],
    ids=str,
)
@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
def test_backend_conv2d_maxpool(dtype, shape, stride, relu):
    from fastnn.backends import get

    cpu = get("cpu")
    n, ci, h, wd, co, k, padding, pool = shape
    x, w, b, _ = make((n, ci, h, wd, co, k, stride, padding), dtype, seed=12)
    y, argmax = cpu.conv2d_maxpool_forward(x, w, b, stride, padding, relu, pool)
    y_conv = REF.conv2d_forward(x, w, b, stride, padding, relu)
    y_ref, _ = REF.maxpool2d_forward(y_conv, pool)
    assert y.dtype == dtype and argmax.dtype == np.int32
    assert rel_err(y, y_ref) < TOL[dtype]
    dyp = np.random.default_rng(13).standard_normal(y.shape).astype(dtype)
    for need_dx in (True, False):
        dx, dw, db = cpu.conv2d_maxpool_backward(
            x, w, y, argmax, dyp, stride, padding, relu, pool, need_dx=need_dx
        )
        dconv = REF.maxpool2d_backward(dyp, argmax, y_conv.shape, pool)
        dx_ref, dw_ref, db_ref = REF.conv2d_backward(x, w, y_conv, dconv, stride, padding, relu)
        assert rel_err(dw, dw_ref) < TOL[dtype] and rel_err(db, db_ref) < TOL[dtype]
        if need_dx:
            assert rel_err(dx, dx_ref) < TOL[dtype]
        else:
            assert dx is None


def test_backend_conv2d_maxpool_bad_arguments():
    from fastnn.backends import get

    cpu = get("cpu")
    x, w, b, _ = make((2, 1, 12, 12, 4, 5, 1, 0), np.float32)
    with pytest.raises(ValueError, match="kernel"):
        cpu.conv2d_maxpool_forward(x, w, b, 1, 0, True, 9)
    with pytest.raises(TypeError, match="w"):
        cpu.conv2d_maxpool_forward(x, w.astype(np.float64), b, 1, 0, True, 2)
    y, argmax = cpu.conv2d_maxpool_forward(x, w, b, 1, 0, True, 2)
    dy = np.ones_like(y)
    with pytest.raises(TypeError, match="argmax"):
        cpu.conv2d_maxpool_backward(
            x, w, y, argmax.astype(np.float32), dy, 1, 0, True, 2, need_dx=False
        )
    with pytest.raises(ValueError, match="argmax"):
        cpu.conv2d_maxpool_backward(x, w, y, argmax[:, :, :2], dy, 1, 0, True, 2, need_dx=False)
    with pytest.raises(ValueError, match="dy"):
        cpu.conv2d_maxpool_backward(x, w, y, argmax, dy[:1], 1, 0, True, 2, need_dx=False)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("pool", [0, 2, 3])
@pytest.mark.parametrize(
    "shape, dtype, algorithm",
    [
        ((5, 1, 28, 28, 32, 5, 1, 0), np.float32, "direct"),  # the AVX-512 kernel's shape
        ((5, 1, 36, 36, 96, 5, 1, 0), np.float32, "direct"),  # large enough to split a sample
        ((5, 1, 70, 41, 30, 5, 1, 2), np.float32, "direct"),  # the same, AVX2 kernel
        ((5, 1, 13, 11, 7, 3, 1, 1), np.float32, "direct"),
        ((5, 32, 12, 12, 64, 5, 1, 0), np.float32, "gemm"),
        ((5, 3, 9, 8, 5, 3, 1, 2), np.float64, "gemm"),
        ((5, 2, 9, 9, 4, 3, 2, 1), np.float32, "gemm"),
        ((5, 32, 12, 12, 64, 5, 1, 0), np.float32, "winograd"),  # the CNN's conv2
        ((5, 6, 14, 14, 16, 5, 1, 0), np.float32, "winograd"),  # LeNet-5's, one input block
        ((5, 13, 11, 9, 20, 5, 1, 2), np.float32, "winograd"),  # partial blocks and tiles
    ],
    ids=str,
)
def test_fewer_samples_than_threads_same_bits(shape, dtype, algorithm, pool, isa, conv_isa):
    """With fewer samples than threads the work of one sample is split instead (channels,
    the GEMM, or Winograd's channel blocks and frequencies): each sample's output is bitwise
    what it is at one thread and in a larger batch."""
    if algorithm == "gemm" and (pool or isa != ISAS[0]):
        pytest.skip("gemm: no fused max-pool, and the conv ISA does not select its kernels")
    conv_isa(isa)
    x, w, b, dy = make(shape, dtype, seed=21)
    stride, padding = shape[6], shape[7]

    def forward(xs, nthreads):
        n, co, ho, wo = xs.shape[0], *dy.shape[1:]
        if not pool:
            y = np.full((n, co, ho, wo), np.nan, dtype)
            conv.forward(xs, w, b, y, stride, padding, True, algorithm=algorithm, nthreads=nthreads)
            return (y,)
        y = np.full((n, co, ho // pool, wo // pool), np.nan, dtype)
        argmax = np.full(y.shape, -1, np.int32)
        conv.forward_maxpool(
            xs, w, b, y, argmax, stride, padding, True, pool, algorithm=algorithm, nthreads=nthreads
        )
        return y, argmax

    whole = forward(x, 1)
    for n in (1, 2):
        for nthreads in (1, 2, 3, 4):
            for part, ref in zip(forward(x[3 : 3 + n], nthreads), whole):
                assert part.tobytes() == ref[3 : 3 + n].tobytes()


@pytest.mark.parametrize("pool", [0, 2, 3])
@pytest.mark.parametrize(
    "shape",
    [
        (3, 1, 28, 28, 32, 5, 1, 0),
        (2, 1, 28, 28, 6, 5, 1, 2),
        (2, 1, 20, 17, 7, 5, 1, 1),
        (5, 1, 13, 13, 13, 5, 1, 2),
        (2, 1, 32, 32, 8, 5, 1, 0),
    ],
    ids=str,
)
def test_direct_avx512_and_avx2_forward_same_bits(shape, pool, conv_isa):
    """The AVX-512 forward kernels (flattened rows for pool 0 and 2) compute every output as
    the AVX2 kernel does: the same chain of FMAs in tap order, then bias and ReLU."""
    x, w, b, dy = make(shape, np.float32, seed=23)
    padding = shape[7]
    results = []
    for isa in ("avx512", "avx2"):
        conv_isa(isa)
        co, ho, wo = dy.shape[1:]
        if pool:
            y = np.full((x.shape[0], co, ho // pool, wo // pool), np.nan, np.float32)
            argmax = np.full(y.shape, -1, np.int32)
            conv.forward_maxpool(x, w, b, y, argmax, 1, padding, True, pool, algorithm="direct")
            results.append(y.tobytes() + argmax.tobytes())
        else:
            y = np.full(dy.shape, np.nan, np.float32)
            conv.forward(x, w, b, y, 1, padding, True, algorithm="direct")
            results.append(y.tobytes())
    assert results[0] == results[1]
