"""fastnn._kernels.gemm against NumPy: every ISA path this CPU runs, every transpose, epilogue
and beta, odd and large shapes, float32 and float64; thread-count independence; bad arguments."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastnn_testing import assert_matches

gemm = pytest.importorskip("fastnn._kernels.gemm")

DEFAULT_ISA = gemm.isa()


def _runnable_isas():
    runnable = [name for name in gemm.ISAS if gemm._set_isa(name) == name]
    gemm._set_isa(None)
    return runnable


RUNNABLE = _runnable_isas()


@pytest.fixture(params=RUNNABLE)
def isa(request):
    assert gemm._set_isa(request.param) == request.param
    yield request.param
    gemm._set_isa(None)


def reference(a, b, transa, transb, bias, bias_mode, relu, c0, beta):
    """The same computation in float64 NumPy."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    r = (a64.T if transa else a64) @ (b64.T if transb else b64)
    if beta != 0:
        r += beta * c0.astype(np.float64)
    if bias_mode == 1:
        r += bias[None, :]
    elif bias_mode == 2:
        r += bias[:, None]
    return np.maximum(r, 0) if relu else r


def run_case(rng, dtype, M, N, K, transa, transb, bias_mode, relu, beta, nthreads=0):
    a = rng.uniform(-1, 1, (K, M) if transa else (M, K)).astype(dtype)
    b = rng.uniform(-1, 1, (N, K) if transb else (K, N)).astype(dtype)
    bias = None if bias_mode == 0 else rng.uniform(-1, 1, N if bias_mode == 1 else M).astype(dtype)
    c0 = rng.uniform(-1, 1, (M, N)).astype(dtype)
    out = c0.copy() if beta != 0 else np.full((M, N), np.nan, dtype)  # beta 0: never read
    got = gemm.matmul(
        a,
        b,
        transa=transa,
        transb=transb,
        bias=bias,
        bias_mode=bias_mode,
        relu=relu,
        out=out,
        beta=beta,
        nthreads=nthreads,
    )
    assert got is out
    want = reference(a, b, transa, transb, bias, bias_mode, relu, c0, beta)
    return got, want


# error relative to the result's scale, at least 1 (entries near zero carry the rounding of big
# terms); float64 GEMM is held tighter than the suite's default
GEMM_RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


def assert_close(got, want, dtype):
    assert_matches(got, want, dtype, rtol=GEMM_RTOL[np.dtype(dtype)], floor=1.0)


# Small M and small N (with B transposed) take the unpacked paths, the rest the packed one;
# sizes straddle the tile widths (6, 8, 16, 32) and the K blocking.
SHAPES = [
    (1, 1, 1),
    (1, 10, 256),
    (2, 3, 5),
    (3, 40, 70),
    (4, 100, 33),
    (7, 1, 13),
    (16, 37, 20),
    (17, 33, 65),
    (13, 31, 300),
    (31, 7, 2),
    (64, 48, 600),
    (130, 17, 9),
]


@pytest.mark.parametrize("transa", [False, True])
@pytest.mark.parametrize("transb", [False, True])
@pytest.mark.parametrize("M,N,K", SHAPES)
def test_float32_transposes_and_shapes(isa, M, N, K, transa, transb):
    rng = np.random.default_rng([M, N, K, transa, transb])
    got, want = run_case(rng, np.float32, M, N, K, transa, transb, 0, False, 0.0)
    assert_close(got, want, np.float32)


EPILOGUE_SHAPES = [
    (19, 37, 41, False, True),
    (6, 16, 3, True, False),
    (50, 70, 300, True, True),
    (1, 5, 2, False, False),
]


def check_epilogue(dtype, bias_mode, relu, beta):
    rng = np.random.default_rng([bias_mode, relu, int(beta * 2) + 2])
    for M, N, K, ta, tb in EPILOGUE_SHAPES:
        got, want = run_case(rng, dtype, M, N, K, ta, tb, bias_mode, relu, beta)
        assert_close(got, want, dtype)


@pytest.mark.parametrize("bias_mode", [0, 1, 2])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("beta", [0.0, 1.0, -0.5])
def test_float32_epilogue_and_beta(isa, bias_mode, relu, beta):
    check_epilogue(np.float32, bias_mode, relu, beta)


@pytest.mark.parametrize("bias_mode", [0, 1, 2])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("beta", [0.0, 1.0, -0.5])
def test_float64_epilogue_and_beta(bias_mode, relu, beta):
    check_epilogue(np.float64, bias_mode, relu, beta)


@pytest.mark.parametrize("transa", [False, True])
@pytest.mark.parametrize("transb", [False, True])
@pytest.mark.parametrize("M,N,K", SHAPES[1:7])
def test_float64(M, N, K, transa, transb):
    rng = np.random.default_rng([M, N, K, transa, transb, 64])
    got, want = run_case(rng, np.float64, M, N, K, transa, transb, 1, True, 0.5)
    assert_close(got, want, np.float64)


@pytest.mark.parametrize(
    "transa,transb,M,N,K",
    [
        (False, True, 1000, 512, 784),  # forward, batch 1000
        (False, False, 128, 784, 512),  # dX = dY @ W
        (True, False, 512, 784, 128),  # dW = dY^T @ X
    ],
)
def test_large(isa, transa, transb, M, N, K):
    rng = np.random.default_rng([M, N, K])
    got, want = run_case(rng, np.float32, M, N, K, transa, transb, 1, True, 0.0)
    assert_close(got, want, np.float32)


def test_zero_sized_and_empty_k():
    rng = np.random.default_rng(0)
    a, b = np.ones((0, 5), np.float32), np.ones((5, 3), np.float32)
    assert gemm.matmul(a, b).shape == (0, 3)
    a, b = rng.normal(size=(4, 0)), rng.normal(size=(0, 3))
    bias = rng.normal(size=3)
    out = rng.normal(size=(4, 3))
    want = np.maximum(2.0 * out + bias, 0)
    gemm.matmul(a, b, bias=bias, bias_mode=1, relu=True, out=out, beta=2.0)
    np.testing.assert_allclose(out, want)


@pytest.mark.parametrize(
    "transa,transb,M,N,K",
    [
        (False, True, 128, 512, 784),
        (False, False, 128, 784, 512),
        (True, False, 512, 784, 128),
        (False, True, 301, 7, 500),
        (False, False, 9, 1000, 130),
        (True, True, 77, 133, 1100),
        (False, True, 1, 1000, 784),
        (True, True, 3, 500, 600),
        (False, False, 2, 700, 300),
        (False, True, 300, 12, 500),
    ],
)
def test_bitwise_identical_across_thread_counts(isa, transa, transb, M, N, K):
    rng = np.random.default_rng([M, N, K, 1])
    a = rng.normal(size=(K, M) if transa else (M, K)).astype(np.float32)
    b = rng.normal(size=(N, K) if transb else (K, N)).astype(np.float32)
    bias = rng.normal(size=N).astype(np.float32)
    runs = [
        gemm.matmul(a, b, transa=transa, transb=transb, bias=bias, bias_mode=1, nthreads=n)
        for n in (1, 2, 3)
    ]
    for other in runs[1:]:
        assert np.array_equal(runs[0], other)
    assert_close(runs[0], reference(a, b, transa, transb, bias, 1, False, None, 0.0), np.float32)


def test_relu_keeps_nan(isa):
    a = np.ones((3, 4), np.float32)
    a[1, 2] = np.nan
    got = gemm.matmul(a, -np.ones((4, 20), np.float32), relu=True)
    assert np.isnan(got[1]).all()
    assert (got[[0, 2]] == 0).all()


def test_isa_env_var_selects_a_lower_path(tmp_path):
    for name in gemm.ISAS:
        env = dict(os.environ, FASTNN_GEMM_ISA=name)
        code = "from fastnn._kernels import gemm; print(gemm.isa())"
        result = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            check=True,
        )
        want = name if name in RUNNABLE else DEFAULT_ISA
        assert result.stdout.strip() == want
    assert DEFAULT_ISA == RUNNABLE[0]  # without the variable: the best this CPU runs


def test_set_isa_rejects_unknown_names():
    with pytest.raises(ValueError, match="isa"):
        gemm._set_isa("sse9")
    assert gemm.isa() == DEFAULT_ISA


def test_cimportable_specializations_are_exported():
    exported = " ".join(gemm.__pyx_capi__)
    assert "float" in exported and "double" in exported


def _bad_calls():
    f32 = np.zeros((3, 4), np.float32)
    g32 = np.zeros((4, 5), np.float32)
    yield "a must be a numpy", TypeError, lambda: gemm.matmul([[1.0]], g32)
    yield "a must be 2-D", ValueError, lambda: gemm.matmul(np.zeros(4, np.float32), g32)
    yield "a must be float32 or float64", TypeError, lambda: gemm.matmul(f32.astype(np.int32), g32)
    yield "b must have the same dtype", TypeError, lambda: gemm.matmul(f32, g32.astype(float))
    yield (
        "b must be C-contiguous",
        ValueError,
        lambda: gemm.matmul(f32, np.zeros((5, 4), np.float32).T),
    )
    yield "inner dimensions", ValueError, lambda: gemm.matmul(f32, g32, transa=True)
    yield "bias_mode must be", ValueError, lambda: gemm.matmul(f32, g32, bias_mode=3)
    yield (
        "bias and bias_mode",
        ValueError,
        lambda: gemm.matmul(f32, g32, bias=np.zeros(5, np.float32)),
    )
    yield "bias and bias_mode", ValueError, lambda: gemm.matmul(f32, g32, bias_mode=1)
    yield (
        r"bias must have shape \(5,\)",
        ValueError,
        lambda: gemm.matmul(f32, g32, bias=np.zeros(3, np.float32), bias_mode=1),
    )
    yield (
        r"bias must have shape \(3,\)",
        ValueError,
        lambda: gemm.matmul(f32, g32, bias=np.zeros(5, np.float32), bias_mode=2),
    )
    yield (
        "bias must have the same dtype",
        TypeError,
        lambda: gemm.matmul(f32, g32, bias=np.zeros(5), bias_mode=1),
    )
    yield (
        "bias must be a numpy",
        TypeError,
        lambda: gemm.matmul(f32, g32, bias=[0.0] * 5, bias_mode=1),
    )
    yield "beta must be a real", TypeError, lambda: gemm.matmul(f32, g32, beta="x")
    yield "out must be given", ValueError, lambda: gemm.matmul(f32, g32, beta=1.0)
    yield (
        r"out must have shape \(3, 5\)",
        ValueError,
        lambda: gemm.matmul(f32, g32, out=np.zeros((5, 3), np.float32)),
    )
    yield (
        "out must have the same dtype",
        TypeError,
        lambda: gemm.matmul(f32, g32, out=np.zeros((3, 5))),
    )
    yield "out must not overlap a", ValueError, _overlap
    yield "out must not overlap b", ValueError, _overlap_rows
    yield "out must not overlap bias", ValueError, _overlap_bias
    yield "nthreads must be", ValueError, lambda: gemm.matmul(f32, g32, nthreads=-1)
    yield "nthreads must be", ValueError, lambda: gemm.matmul(f32, g32, nthreads=1.5)


def _overlap():
    x = np.ones((3, 3), np.float32)
    return gemm.matmul(x, np.ones((3, 3), np.float32), out=x)


def _overlap_rows():  # C-contiguous row ranges of one buffer sharing a row
    buf = np.ones((5, 3), np.float32)
    return gemm.matmul(np.ones((3, 3), np.float32), buf[:3], out=buf[2:])


def _overlap_bias():
    buf = np.ones((4, 3), np.float32)
    return gemm.matmul(
        np.ones((3, 2), np.float32),
        np.ones((2, 3), np.float32),
        out=buf[:3],
        bias=buf[2],
        bias_mode=1,
    )


def test_adjacent_rows_of_one_buffer_are_fine():
    buf = np.zeros((6, 3), np.float32)
    buf[:3] = np.arange(9).reshape(3, 3)
    gemm.matmul(np.eye(3, dtype=np.float32), buf[:3], out=buf[3:])
    assert np.array_equal(buf[3:], buf[:3])


@pytest.mark.parametrize("match,exc,call", list(_bad_calls()))
def test_bad_arguments_raise(match, exc, call):
    with pytest.raises(exc, match=match):
        call()


def test_read_only_out_is_refused():
    out = np.zeros((3, 5), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        gemm.matmul(np.zeros((3, 4), np.float32), np.zeros((4, 5), np.float32), out=out)


@pytest.mark.parametrize(
    "name,w,mr,nv",
    [("avx512", 16, "GK_AVX512_MR", "GK_AVX512_NV"), ("avx2", 8, "GK_AVX2_MR", "GK_AVX2_NV")],
)
def test_tile_shapes_emulated_in_portable_code(tmp_path, name, w, mr, nv):
    """The x86 paths' blocking and edge handling, with portable vectors: runs on any CPU, so the
    AVX-512 tiling is checked even where no AVX-512 hardware is at hand."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = Path(gemm.__file__).parent / "src"
    if not (src / "gemm_portable.c").exists():
        pytest.skip("C sources not installed")
    test_c = Path(__file__).parent / "c" / "gemm_emulated.c"
    exe = tmp_path / f"emulated_{name}"
    sources = [str(src / f) for f in ("gemm.c", "gemm_portable.c")]
    subprocess.run(
        [
            cc,
            "-O0",
            f"-I{src}",
            f"-DGK_PORTABLE_W={w}",
            f"-DGK_PORTABLE_MR={mr}",
            f"-DGK_PORTABLE_NV={nv}",
            str(test_c),
            *sources,
            "-lm",
            "-o",
            str(exe),
        ],
        check=True,
        capture_output=True,
    )
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert "0 failures" in result.stdout
