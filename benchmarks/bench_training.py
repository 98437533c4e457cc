"""Training and inference of the issue's workloads: fastnn vs NumPy-from-scratch vs PyTorch.

Groups: "epoch:<workload>" (one epoch of 60k, pedantic, --epoch-rounds rounds),
"infer:<workload> batch1" and "... batch1000" (the big MLP and the CNN, with ONNX Runtime on the
graph fastnn exports), and, with --sweeps only, "step:<workload>" (one training step, batch 128).
PyTorch and ONNX Runtime rows skip where they are not importable; fastnn rows skip until its
cpu backend and model API are installed. Every epoch and inference result also goes into the
summary table the session ends with (conftest.py, summary.py).
"""

import numpy as np
import pytest

import runners
import workloads as W

WORKLOADS = list(W.WORKLOADS)


@pytest.fixture(scope="module")
def make_runner(mnist):
    cache = {}

    def make(impl, workload):
        key = (impl, workload)
        if key not in cache:
            try:
                cache[key] = runners.Runner(impl, workload, *mnist)
            except runners.Unavailable as exc:
                cache[key] = exc
        if isinstance(cache[key], runners.Unavailable):
            pytest.skip(str(cache[key]))
        return cache[key]

    return make


@pytest.mark.sweep
@pytest.mark.parametrize("impl", runners.IMPLS)
@pytest.mark.parametrize("workload", WORKLOADS)
def test_step(benchmark, record, make_runner, workload, impl):
    runner = make_runner(impl, workload)
    step = runner.step()
    step()  # first-call allocations and thread start-up are not part of a step
    benchmark.group = f"step:{workload}"
    benchmark(step)
    record(flops=W.WORKLOADS[workload].train_flops() * W.BATCH, samples=W.BATCH, impl=impl)


@pytest.mark.parametrize("impl", runners.IMPLS)
@pytest.mark.parametrize("workload", WORKLOADS)
def test_epoch(benchmark, record, make_runner, request, workload, impl):
    runner = make_runner(impl, workload)
    runner.step()()
    epoch = runner.epoch()
    benchmark.group = f"epoch:{workload}"
    rounds = request.config.getoption("--epoch-rounds")
    benchmark.pedantic(epoch, rounds=rounds, iterations=1, warmup_rounds=0)
    n = len(runner.x)
    record(
        flops=W.WORKLOADS[workload].train_flops() * n,
        samples=n,
        impl=impl,
        summary=(workload, "epoch"),
    )


@pytest.mark.parametrize("impl", runners.INFER_IMPLS)
@pytest.mark.parametrize("batch", [1, 1000])
@pytest.mark.parametrize("workload", ["mlp-512-256", "cnn"])
def test_infer(benchmark, record, make_runner, workload, batch, impl):
    runner = make_runner(impl, workload)
    predict = runner.infer(batch)
    predict()
    benchmark.group = f"infer:{workload} batch{batch}"
    benchmark(predict)
    record(
        flops=W.WORKLOADS[workload].forward_flops() * batch,
        samples=batch,
        impl=impl,
        summary=(workload, f"infer:batch{batch}"),
    )


# LeNet-5's second conv runs Winograd F(4x4, 5x5) on cpu. Where a 5x5x6 window is all zero
# (MNIST's background, after conv1's ReLU) the exact output is the bias, 0 at the start, but
# Winograd's transforms leave rounding noise of either sign there; the ReLU mask then lets
# gradient through at some of those positions. dW is unaffected (x is 0 there), db is not:
# after five steps it is off by up to 3e-3. Known, left as is; strict, so a fix shows up here.
_WINOGRAD_MASK = pytest.mark.xfail(
    strict=True,
    reason="Winograd noise at exactly-zero pre-activations flips LeNet-5 conv2's ReLU mask (db)",
)


@pytest.mark.parametrize(
    "workload", [pytest.param(w, marks=_WINOGRAD_MASK) if w == "lenet5" else w for w in WORKLOADS]
)
def test_implementations_agree(mnist, workload):
    """Not a benchmark: the three implementations start from the same weights, so after a few
    identical steps their weights must agree (float32 rounding aside). Keeps the comparison
    honest: every column does the same work."""
    x, y = mnist
    results = {}
    for impl in runners.IMPLS:
        try:
            runner = runners.Runner(impl, workload, x[:640], y[:640])
        except runners.Unavailable:
            continue
        for b in runner.batches:
            runner.net.train_step(runner._as_input(runner.x[b]), runner._as_input(runner.y[b]))
        results[impl] = [np.asarray(w) for pair in runner.net.weights() for w in pair]
    if len(results) < 2:
        pytest.skip("needs two implementations")
    reference = results.pop("numpy-scratch")
    for impl, weights in results.items():
        for got, want in zip(weights, reference):
            np.testing.assert_allclose(got, want, rtol=0, atol=2e-4, err_msg=impl)
