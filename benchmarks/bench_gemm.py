"""GEMM speed on the MLP and conv shapes: fastnn's kernel (1 thread and all threads) against
NumPy's matmul (OpenBLAS as configured here), with the bias/ReLU epilogue where the layer has it.

    pytest benchmarks/bench_gemm.py --benchmark-only --benchmark-group-by=param:shape
Each result's extra_info has the GFLOP/s and the ISA path that ran.
"""

import os

import numpy as np
import pytest

gemm = pytest.importorskip("fastnn._kernels.gemm")

# name: (transa, transb, M, N, K, bias_mode, relu); A is op(A) M x K, B is op(B) K x N
SHAPES = {
    "fwd 128x512x784 X@W1^T": (False, True, 128, 512, 784, 1, True),
    "dX 128x784x512 dY@W1": (False, False, 128, 784, 512, 0, False),
    "dW 512x784x128 dY^T@X": (True, False, 512, 784, 128, 0, False),
    "fwd 128x256x512 X@W2^T": (False, True, 128, 256, 512, 1, True),
    "dX 128x512x256 dY@W2": (False, False, 128, 512, 256, 0, False),
    "dW 256x512x128 dY^T@X": (True, False, 256, 512, 128, 0, False),
    "fwd 128x10x256 X@W3^T": (False, True, 128, 10, 256, 1, False),
    "fwd 1000x512x784 X@W1^T": (False, True, 1000, 512, 784, 1, True),
    "fwd 1x512x784 X@W1^T": (False, True, 1, 512, 784, 1, True),
    "fwd 1x256x512 X@W2^T": (False, True, 1, 256, 512, 1, True),
    "conv 64x576x800 W@col": (False, False, 64, 576, 800, 2, True),
    "conv 32x576x25 W@col": (False, False, 32, 576, 25, 2, True),
}


def operands(transa, transb, M, N, K, bias_mode):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((K, M) if transa else (M, K), dtype=np.float32)
    b = rng.standard_normal((N, K) if transb else (K, N), dtype=np.float32)
    bias = (
        None
        if bias_mode == 0
        else rng.standard_normal(N if bias_mode == 1 else M, dtype=np.float32)
    )
    return a, b, bias


def record(benchmark, M, N, K, **info):
    benchmark.extra_info.update(info)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.min > 0:
        benchmark.extra_info["gflops_best"] = round(2.0 * M * N * K / stats.stats.min / 1e9, 1)
        benchmark.extra_info["gflops_median"] = round(2.0 * M * N * K / stats.stats.median / 1e9, 1)


@pytest.mark.parametrize("threads", ["1", "all"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_fastnn_gemm(benchmark, shape, threads):
    transa, transb, M, N, K, bias_mode, relu = SHAPES[shape]
    a, b, bias = operands(transa, transb, M, N, K, bias_mode)
    out = np.empty((M, N), np.float32)
    nthreads = 1 if threads == "1" else 0
    benchmark.group = f"gemm {shape}"
    benchmark(
        gemm.matmul,
        a,
        b,
        transa=transa,
        transb=transb,
        bias=bias,
        bias_mode=bias_mode,
        relu=relu,
        out=out,
        nthreads=nthreads,
    )
    record(benchmark, M, N, K, isa=gemm.isa(), threads=threads)


@pytest.mark.parametrize("shape", list(SHAPES))
def test_numpy_matmul(benchmark, shape):
    transa, transb, M, N, K, bias_mode, relu = SHAPES[shape]
    a, b, bias = operands(transa, transb, M, N, K, bias_mode)
    a_op, b_op = (a.T if transa else a), (b.T if transb else b)
    out = np.empty((M, N), np.float32)

    def numpy_layer():
        np.matmul(a_op, b_op, out=out)
        if bias_mode == 1:
            np.add(out, bias, out=out)
        elif bias_mode == 2:
            np.add(out, bias[:, None], out=out)
        if relu:
            np.maximum(out, 0, out=out)

    benchmark.group = f"gemm {shape}"
    numpy_layer()
    benchmark(numpy_layer)
    record(benchmark, M, N, K, isa="openblas " + os.environ.get("OPENBLAS_CORETYPE", "auto"))
