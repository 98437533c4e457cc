"""The cuda backend on a real GPU: every kernel case against the NumPy reference, bad input,
and one epoch of an MLP on MNIST reaching the cpu backend's accuracy. Skipped, with the reason,
where there is no usable device (CuPy missing, no driver, no GPU)."""
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn.backends import cuda
from fastnn.backends.numpy import NumpyBackend

sys.path.insert(0, str(Path(__file__).resolve().parent / "cuda_harness"))
import kernel_cases  # noqa: E402

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu():
    reason = cuda.probe()
    if reason is not None:
        pytest.skip(reason)
    return fastnn.backends.get("cuda")


@pytest.mark.parametrize("threads", [256, 7])
@pytest.mark.parametrize("case", kernel_cases.CASES, ids=lambda c: c.__name__)
def test_kernel_matches_reference_on_gpu(gpu, case, threads):
    backend = gpu if threads == 256 else cuda.CudaBackend(threads=threads)
    rng = np.random.default_rng(0)
    problems = [p for label, got, expected in case(backend, NumpyBackend(), rng)
                if (p := kernel_cases.compare(label, got, expected, rtol=1e-4, atol=1e-5))]
    assert problems == []


def test_results_live_on_the_device_and_loss_is_lazy(gpu):
    import cupy

    logits = gpu.asarray(np.zeros((4, 10)))
    loss, d = gpu.softmax_cross_entropy(logits, np.arange(4))
    assert isinstance(loss, cupy.ndarray) and loss.ndim == 0 and isinstance(d, cupy.ndarray)
    assert np.isclose(float(loss), np.log(10), rtol=1e-6)


def test_bad_input_on_gpu(gpu):
    import cupy

    x = cupy.zeros((2, 3), dtype=cupy.float64)
    with pytest.raises(TypeError, match="x must be float32"):
        gpu.linear_forward(x, x, cupy.zeros(2))
    with pytest.raises(TypeError, match="x must be a cupy ndarray"):
        gpu.linear_forward(np.zeros((2, 3), np.float32), gpu.zeros((2, 3)), gpu.zeros(2))
    with pytest.raises(ValueError, match="contains NaN"):
        gpu.linear_forward(gpu.asarray(np.full((2, 3), np.nan)), gpu.zeros((2, 3)), gpu.zeros(2))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        gpu.softmax_cross_entropy(gpu.zeros((2, 3)), cupy.asarray([0, 5]))
    loss, _ = gpu.softmax_cross_entropy(gpu.zeros((2, 3)), cupy.asarray([0, 5]), check_finite=False)
    assert np.isnan(float(loss))


def mlp_epoch(backend, x_train, y_train, x_test, y_test, hidden=128, batch=128, seed=0):
    """One epoch of SGD (momentum 0.9) on a 784-hidden-10 ReLU MLP written against the kernel
    contract only; returns (test accuracy, seconds for the epoch)."""
    rng = np.random.default_rng(seed)
    shapes = [(hidden, 784), (hidden,), (10, hidden), (10,)]
    params = [(rng.standard_normal(s) * (np.sqrt(2 / s[1]) if len(s) == 2 else 0)).astype(np.float32)
              for s in shapes]
    params = [backend.asarray(p) for p in params]
    velocity = [backend.zeros(p.shape) for p in params]
    x_dev, x_test_dev = backend.asarray(x_train), backend.asarray(x_test)
    order = rng.permutation(len(x_train))
    backend.synchronize()
    start = time.perf_counter()
    for begin in range(0, len(order), batch):
        idx = order[begin:begin + batch]
        xb = x_dev[backend.asarray(idx)] if backend.name == "cuda" else x_dev[idx]
        w1, b1, w2, b2 = params
        h = backend.linear_forward(xb, w1, b1, relu=True, check_finite=False)
        logits = backend.linear_forward(h, w2, b2, check_finite=False)
        _, dlogits = backend.softmax_cross_entropy(logits, y_train[idx], check_finite=False)
        dh, dw2, db2 = backend.linear_backward(h, w2, logits, dlogits, check_finite=False)
        _, dw1, db1 = backend.linear_backward(xb, w1, h, dh, relu=True, check_finite=False)
        for p, g, v in zip(params, (dw1, db1, dw2, db2), velocity):
            backend.sgd_step(p, g, v, lr=0.05, momentum=0.9)
    backend.synchronize()
    seconds = time.perf_counter() - start
    h = backend.linear_forward(x_test_dev, params[0], params[1], relu=True)
    logits = backend.to_numpy(backend.linear_forward(h, params[2], params[3]))
    return float((logits.argmax(axis=1) == y_test).mean()), seconds


def _mnist(n_train=None):
    (x_train, y_train), (x_test, y_test) = fastnn.datasets.mnist()
    x_train = fastnn.datasets.to_float(x_train).reshape(len(x_train), -1)[:n_train]
    x_test = fastnn.datasets.to_float(x_test).reshape(len(x_test), -1)
    return x_train, y_train[:n_train].astype(np.int64), x_test, y_test


def test_mlp_epoch_helper_on_the_cpu():
    # the GPU test below cannot run here; check its training loop on the backends that can
    data = _mnist(n_train=1500)
    acc_numpy, _ = mlp_epoch(fastnn.backends.get("numpy"), *data, hidden=32)
    acc_cpu, _ = mlp_epoch(fastnn.backends.get("cpu"), *data, hidden=32)
    assert acc_numpy > 0.6 and abs(acc_numpy - acc_cpu) < 0.01


def test_one_mlp_epoch_on_gpu_matches_cpu_accuracy(gpu):
    data = _mnist()
    acc_cpu, seconds_cpu = mlp_epoch(fastnn.backends.get("cpu"), *data)
    acc_gpu, seconds_gpu = mlp_epoch(gpu, *data)
    print(f"one MLP epoch: cpu {seconds_cpu:.2f} s (accuracy {acc_cpu:.4f}), "
          f"cuda {seconds_gpu:.2f} s (accuracy {acc_gpu:.4f})")
    assert acc_gpu > 0.93 and abs(acc_gpu - acc_cpu) < 0.01
