"""conv2d speed on the layers of mnist_cnn (conv 1->32 and 32->64, 5x5) and LeNet-5 (conv 1->6
pad 2 and 6->16, 5x5) at batch 128: fastnn's kernels (the algorithm `auto` picks, and plain
im2col+GEMM) against the NumPy reference on the same inputs, forward and backward.

    pytest benchmarks/bench_conv.py --benchmark-only
The "conv+pool" groups time the fused conv2d + ReLU + 2x2 max-pool kernels against the
conv2d and maxpool2d kernels run one after the other.
Each result's extra_info has the algorithm and its GFLOP/s, counted as the direct convolution's
2*N*Co*Ho*Wo*Ci*kH*kW per pass (backward: dW, plus dX where the layer needs it), so Winograd's
figures are "effective" rates comparable with GEMM's.
"""

import numpy as np
import pytest

conv = pytest.importorskip("fastnn._kernels.conv")
from fastnn.backends.numpy import NumpyBackend  # noqa: E402

BATCH = 128
# name: (Ci, H, Co, k, padding, need_dx); stride 1, ReLU fused as in the models
LAYERS = {
    "cnn conv1 1->32 28x28": (1, 28, 32, 5, 0, False),
    "cnn conv2 32->64 12x12": (32, 12, 64, 5, 0, True),
    "lenet conv1 1->6 28x28 pad2": (1, 28, 6, 5, 2, False),
    "lenet conv2 6->16 14x14": (6, 14, 16, 5, 0, True),
}


def operands(name):
    ci, h, co, k, padding, need_dx = LAYERS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, ci, h, h), dtype=np.float32)
    w = (rng.standard_normal((co, ci, k, k)) / np.sqrt(ci * k * k)).astype(np.float32)
    b = rng.standard_normal(co, dtype=np.float32)
    ho = h + 2 * padding - k + 1
    y = np.empty((BATCH, co, ho, ho), np.float32)
    conv.forward(x, w, b, y, 1, padding, True)
    dy = rng.standard_normal(y.shape, dtype=np.float32)
    flops = 2.0 * BATCH * co * ho * ho * ci * k * k
    return x, w, b, y, dy, padding, need_dx, flops


def record(benchmark, flops, **info):
    benchmark.extra_info.update(info)
    stats = getattr(benchmark, "stats", None)
    if stats is not None and stats.stats.min > 0:
        benchmark.extra_info["gflops_best"] = round(flops / stats.stats.min / 1e9, 1)
        benchmark.extra_info["gflops_median"] = round(flops / stats.stats.median / 1e9, 1)


@pytest.mark.parametrize("algorithm", ["auto", "gemm"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_cpu_forward(benchmark, layer, algorithm):
    x, w, b, y, _, padding, _, flops = operands(layer)
    algo = conv.choose(x.shape, w.shape, x.dtype, 1, padding, algorithm)
    if algorithm != "auto" and algo == conv.choose(x.shape, w.shape, x.dtype, 1, padding):
        pytest.skip("auto already runs this algorithm")
    benchmark.group = f"conv forward {layer}"
    benchmark(conv.forward, x, w, b, y, 1, padding, True, algorithm=algorithm)
    record(benchmark, flops, algorithm=algo, isa=conv.isa())


@pytest.mark.parametrize("algorithm", ["auto", "gemm"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_cpu_backward(benchmark, layer, algorithm):
    x, w, _, y, dy, padding, need_dx, flops = operands(layer)
    algo = conv.choose(x.shape, w.shape, x.dtype, 1, padding, algorithm)
    if algorithm != "auto" and algo == conv.choose(x.shape, w.shape, x.dtype, 1, padding):
        pytest.skip("auto already runs this algorithm")
    dx = np.empty_like(x) if need_dx else None
    dw, db = np.empty_like(w), np.empty(w.shape[0], np.float32)
    benchmark.group = f"conv backward {layer}"
    benchmark(conv.backward, x, w, y, dy, dx, dw, db, 1, padding, True, algorithm=algorithm)
    record(benchmark, flops * (2 if need_dx else 1), algorithm=algo, need_dx=need_dx)


@pytest.mark.parametrize("layer", list(LAYERS))
def test_numpy_forward(benchmark, layer):
    x, w, b, _, _, padding, _, flops = operands(layer)
    benchmark.group = f"conv forward {layer}"
    benchmark.pedantic(
        NumpyBackend().conv2d_forward, (x, w, b, 1, padding, True), rounds=3, iterations=1
    )
    record(benchmark, flops, algorithm="numpy reference")


@pytest.mark.parametrize("layer", list(LAYERS))
def test_numpy_backward(benchmark, layer):
    x, w, _, y, dy, padding, need_dx, flops = operands(layer)
    benchmark.group = f"conv backward {layer}"
    # the reference always computes dx
    benchmark.pedantic(
        NumpyBackend().conv2d_backward, (x, w, y, dy, 1, padding, True), rounds=3, iterations=1
    )
    record(benchmark, flops * 2, algorithm="numpy reference")


# ---- conv2d + ReLU + 2x2 max-pool: fused kernel against the two kernels -----------------------


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "conv then pool"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_cpu_forward_maxpool(benchmark, layer, fused):
    from fastnn.backends import get

    cpu = get("cpu")
    x, w, b, y, _, padding, _, flops = operands(layer)
    benchmark.group = f"conv+pool forward {layer}"
    if fused:
        yp = np.empty((y.shape[0], y.shape[1], y.shape[2] // 2, y.shape[3] // 2), np.float32)
        argmax = np.empty(yp.shape, np.int32)
        benchmark(conv.forward_maxpool, x, w, b, yp, argmax, 1, padding, True, 2)
    else:

        def two_kernels():
            out = cpu.conv2d_forward(x, w, b, 1, padding, True, check_finite=False, out=y)
            return cpu.maxpool2d_forward(out, 2, check_finite=False)

        benchmark(two_kernels)
    record(benchmark, flops, fused=fused)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "pool then conv"])
@pytest.mark.parametrize("layer", list(LAYERS))
def test_cpu_backward_maxpool(benchmark, layer, fused):
    from fastnn.backends import get

    cpu = get("cpu")
    x, w, b, y, _, padding, need_dx, flops = operands(layer)
    yp, argmax = cpu.conv2d_maxpool_forward(x, w, b, 1, padding, True, 2)
    dyp = np.random.default_rng(1).standard_normal(yp.shape, dtype=np.float32)
    dx = np.empty_like(x) if need_dx else None
    dw, db = np.empty_like(w), np.empty(w.shape[0], np.float32)
    benchmark.group = f"conv+pool backward {layer}"
    if fused:
        benchmark(conv.backward_maxpool, x, w, yp, argmax, dyp, dx, dw, db, 1, padding, True, 2)
    else:

        def two_kernels():
            dconv = cpu.maxpool2d_backward(dyp * (yp > 0), argmax, y.shape, 2, check_finite=False)
            return cpu.conv2d_backward(
                x,
                w,
                dconv,
                dconv,
                1,
                padding,
                False,
                check_finite=False,
                need_dx=need_dx,
                out=(dx, dw, db),
            )

        benchmark(two_kernels)
    record(benchmark, flops * (2 if need_dx else 1), fused=fused)
