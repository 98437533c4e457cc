"""The cuda backend on a real GPU: every kernel case against the NumPy reference, bad input,
and one epoch of an MLP and a CNN on MNIST reaching the cpu backend's accuracy (timed).
Skipped, with the reason, where there is no usable device (CuPy missing, no driver, no GPU)."""

import numpy as np
import pytest

import fastnn
import kernel_cases  # tests/cuda/harness (pytest pythonpath)
from fastnn import nn, optim
from fastnn.backends import cuda
from fastnn.backends.numpy import NumpyBackend

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
    problems = [
        p
        for label, got, expected in case(backend, NumpyBackend(), rng)
        if (p := kernel_cases.compare(label, got, expected, rtol=1e-4, atol=1e-5))
    ]
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


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))


def _cnn():
    return nn.Sequential(
        nn.Conv2d(1, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(512, 10),
    )


def _one_epoch(backend, make_model, data):
    """(test accuracy, seconds of the training epoch) after one epoch of SGD from seed 0."""
    (x, y), (x_test, y_test) = data
    fastnn.seed(0)
    trainer = fastnn.Trainer(make_model(), optim.SGD(lr=0.05, momentum=0.9), backend=backend)
    history = trainer.fit(x, y, epochs=1, batch_size=128, verbose=0)
    return trainer.evaluate(x_test, y_test)["accuracy"], history["epoch_time"][0]


@pytest.mark.parametrize("make_model", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_one_epoch_on_gpu_reaches_the_cpu_accuracy(gpu, make_model):
    (x, y), (x_test, y_test) = fastnn.datasets.mnist()
    data = ((x[:, None], y), (x_test[:, None], y_test))
    _one_epoch(gpu, make_model, ((x[:1024, None], y[:1024]), (x_test[:256, None], y_test[:256])))
    acc_cpu, seconds_cpu = _one_epoch("cpu", make_model, data)
    acc_gpu, seconds_gpu = _one_epoch(gpu, make_model, data)  # kernels compiled by the warm-up
    print(
        f"\none {make_model.__name__[1:]} epoch on MNIST: cpu {seconds_cpu:.2f} s "
        f"(test accuracy {acc_cpu:.4f}), cuda {seconds_gpu:.2f} s ({acc_gpu:.4f})"
    )
    assert acc_gpu > 0.9 and abs(acc_gpu - acc_cpu) < 0.01


def _torch_epoch(make_model, data):
    """(test accuracy, seconds) of the same epoch in PyTorch on the GPU, or None without it."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    (x, y), (x_test, y_test) = data
    fastnn.seed(0)
    reference = make_model()  # the same architecture and initial weights, from fastnn
    modules = []
    for layer in reference.layers:
        kind = type(layer).__name__
        if kind == "Conv2d":
            modules.append(
                torch.nn.Conv2d(
                    layer.in_channels,
                    layer.out_channels,
                    layer.kernel_size,
                    layer.stride,
                    layer.padding,
                )
            )
        elif kind == "Linear":
            modules.append(torch.nn.Linear(layer.in_features, layer.out_features))
        elif kind == "MaxPool2d":
            modules.append(torch.nn.MaxPool2d(layer.kernel_size, layer.stride))
        elif kind == "ReLU":
            modules.append(torch.nn.ReLU())
        else:
            modules.append(torch.nn.Flatten())
    net = torch.nn.Sequential(*modules).cuda()
    with torch.no_grad():
        for p, value in zip(net.parameters(), reference.state_dict().values()):
            p.copy_(torch.from_numpy(value))
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    xs = torch.from_numpy(x.astype(np.float32) / 255).cuda()
    ys = torch.from_numpy(y.astype(np.int64)).cuda()
    order = torch.from_numpy(np.random.default_rng(0).permutation(len(x))).cuda()
    torch.cuda.synchronize()
    import time

    start = time.perf_counter()
    for lo in range(0, len(x), 128):
        idx = order[lo : lo + 128]
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(xs[idx]), ys[idx]).backward()
        opt.step()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        xt = torch.from_numpy(x_test.astype(np.float32) / 255).cuda()
        accuracy = (net(xt).argmax(1).cpu().numpy() == y_test).mean()
    return float(accuracy), seconds


@pytest.mark.parametrize("make_model", [_mlp, _cnn], ids=["mlp", "cnn"])
def test_epoch_times_beside_pytorch_cuda(gpu, make_model):
    """Prints one row of the README's GPU table; asserts only what one epoch must reach."""
    (x, y), (x_test, y_test) = fastnn.datasets.mnist()
    data = ((x[:, None], y), (x_test[:, None], y_test))
    _one_epoch(gpu, make_model, ((x[:1024, None], y[:1024]), (x_test[:256, None], y_test[:256])))
    acc, seconds = _one_epoch(gpu, make_model, data)
    torch_result = _torch_epoch(make_model, data)
    torch_text = (
        "PyTorch CUDA not importable"
        if torch_result is None
        else f"PyTorch CUDA {torch_result[1]:.2f} s ({torch_result[0]:.4f})"
    )
    print(
        f"\n| {make_model.__name__[1:]} | fastnn cuda {seconds:.2f} s ({acc:.4f}) | {torch_text} |"
    )
    assert acc > 0.9
