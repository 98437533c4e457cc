"""Determinism: the cpu kernels give bitwise the same results at 1, 2 and 3 threads, and a
seeded training run gives bitwise the same weights every time (cpu: at any thread count;
numpy: at a fixed thread count, since OpenBLAS's float32 GEMM rounds differently per thread
split). Findings per kernel are in docs/reliability.md."""

import functools
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import threadpoolctl

import fastnn
import fastnn_testing
from fastnn import backends, nn, optim
from fastnn._threads import openmp_enabled

cpu = backends.get("cpu")
THREADS = (1, 2, 3)

needs_openmp = pytest.mark.skipif(
    not openmp_enabled(), reason="kernels built without OpenMP: always one thread"
)


@pytest.fixture(autouse=True)
def restore_threads():
    before = fastnn.get_num_threads()
    yield
    fastnn.set_num_threads(before)


def arrays(dtype, *shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in shapes]


def flat(value):
    if isinstance(value, (tuple, list)):
        return [a for v in value for a in flat(v)]
    return [np.asarray(value)]


def assert_same_at_every_thread_count(call):
    """call() must return bitwise the same arrays at every thread count in THREADS."""
    results = {}
    for t in THREADS:
        fastnn.set_num_threads(t)
        assert fastnn.get_num_threads() == t
        results[t] = flat(call())
    for t in THREADS[1:]:
        for i, (a, b) in enumerate(zip(results[THREADS[0]], results[t])):
            assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (
                f"output {i} differs between 1 and {t} threads"
            )


@needs_openmp
def test_the_comparison_notices_a_thread_dependent_result():
    with pytest.raises(AssertionError, match="differs between 1 and"):
        assert_same_at_every_thread_count(lambda: np.array([fastnn.get_num_threads()]))


# Sizes above every kernel's threshold for going parallel (see each .pyx's PARALLEL_MIN_SIZE
# and the GEMM's minimum flops per thread), so a second thread really takes part.


@needs_openmp
@pytest.mark.parametrize("relu", [False, True])
def test_linear(dtype, relu):
    x, w, b, dy = arrays(dtype, (256, 300), (400, 300), (400,), (256, 400))
    y = cpu.linear_forward(x, w, b, relu)
    assert_same_at_every_thread_count(lambda: cpu.linear_forward(x, w, b, relu))
    assert_same_at_every_thread_count(lambda: cpu.linear_backward(x, w, y, dy, relu))


@needs_openmp
@pytest.mark.parametrize("shape", [(64, 100, 37), (5, 3000, 700), (700, 9, 40)])
@pytest.mark.parametrize("trans", [(False, False), (True, False), (False, True)])
def test_gemm(dtype, shape, trans):
    from fastnn._kernels import gemm

    m, k, n = shape
    a, b = arrays(dtype, (k, m) if trans[0] else (m, k), (n, k) if trans[1] else (k, n))
    assert_same_at_every_thread_count(lambda: gemm.matmul(a, b, *trans))


CONV_CASES = [  # (x shape, w shape, stride, padding)
    ((16, 4, 16, 16), (8, 4, 5, 5), 1, 2),
    ((32, 1, 28, 28), (6, 1, 5, 5), 1, 0),
    ((9, 3, 13, 11), (5, 3, 3, 3), 2, 1),
    ((8, 6, 7, 7), (10, 6, 1, 1), 1, 0),
]


@needs_openmp
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_backend(dtype, case):
    x_shape, w_shape, stride, padding = case
    x, w, b = arrays(dtype, x_shape, w_shape, w_shape[:1])
    y = cpu.conv2d_forward(x, w, b, stride, padding, True)
    (dy,) = arrays(dtype, y.shape, seed=1)
    assert_same_at_every_thread_count(lambda: cpu.conv2d_forward(x, w, b, stride, padding, True))
    assert_same_at_every_thread_count(
        lambda: cpu.conv2d_backward(x, w, y, dy, stride, padding, True)
    )


@needs_openmp
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_kernel_algorithms(dtype, case):
    """Every algorithm of the compiled conv module that takes these arguments, called directly
    (the backend may not route every shape to each)."""
    from fastnn._kernels import conv

    x_shape, w_shape, stride, padding = case
    x, w, b = arrays(dtype, x_shape, w_shape, w_shape[:1])
    ran = 0
    for algorithm in conv.ALGORITHMS:
        try:
            conv.choose(x.shape, w.shape, dtype, stride, padding, algorithm)
        except ValueError:
            continue  # this algorithm does not take these arguments
        y = cpu.conv2d_forward(x, w, b, stride, padding, True)

        def forward():
            out = np.empty_like(y)
            conv.forward(x, w, b, out, stride, padding, True, algorithm=algorithm)
            return out

        def backward(with_dx=True):
            dx = np.empty_like(x) if with_dx else None
            dw, db = np.empty_like(w), np.empty_like(b)
            conv.backward(x, w, y, y, dx, dw, db, stride, padding, True, algorithm=algorithm)
            return dx, dw, db

        try:
            backward()
        except ValueError:  # an algorithm that computes no dx (a first layer's)
            backward = functools.partial(backward, with_dx=False)
            backward()

        assert_same_at_every_thread_count(forward)
        assert_same_at_every_thread_count(backward)
        ran += 1
    assert ran >= 2  # at least "auto" and "gemm"


@needs_openmp
@pytest.mark.parametrize(
    "case", [((16, 1, 28, 28), (6, 1, 5, 5), 0), ((16, 6, 12, 12), (16, 6, 5, 5), 2)]
)
def test_fused_conv2d_maxpool(case):
    x_shape, w_shape, padding = case
    x, w, b = arrays(np.float32, x_shape, w_shape, w_shape[:1])
    y, argmax = cpu.conv2d_maxpool_forward(x, w, b, 1, padding, True, 2)
    (dy,) = arrays(np.float32, y.shape, seed=1)
    assert_same_at_every_thread_count(
        lambda: cpu.conv2d_maxpool_forward(x, w, b, 1, padding, True, 2)
    )
    need_dx = x_shape[1] > 1  # the one-channel (first layer) kernel computes no dx
    assert_same_at_every_thread_count(
        lambda: cpu.conv2d_maxpool_backward(
            x, w, y, argmax, dy, 1, padding, True, 2, need_dx=need_dx
        )
    )


@needs_openmp
def test_maxpool(dtype):
    (x,) = arrays(dtype, (32, 16, 24, 24))
    for kernel, stride in ((2, None), (3, 2)):
        y, argmax = cpu.maxpool2d_forward(x, kernel, stride)
        (dy,) = arrays(dtype, y.shape, seed=1)
        assert_same_at_every_thread_count(lambda: cpu.maxpool2d_forward(x, kernel, stride))
        assert_same_at_every_thread_count(
            lambda: cpu.maxpool2d_backward(dy, argmax, x.shape, kernel, stride)
        )


@needs_openmp
def test_softmax_cross_entropy(dtype):
    (logits,) = arrays(dtype, (4096, 10))
    labels = np.random.default_rng(1).integers(0, 10, 4096)
    assert_same_at_every_thread_count(lambda: cpu.softmax_cross_entropy(logits * 4, labels))


@needs_openmp
def test_optimizer_steps(dtype):
    p0, g = arrays(dtype, (300_001,), (300_001,))

    def sgd():
        p, v = p0.copy(), np.zeros_like(p0)
        for _ in range(3):
            cpu.sgd_step(p, g, v, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
        return p, v

    def adam():
        p, m, v = p0.copy(), np.zeros_like(p0), np.zeros_like(p0)
        for step in range(1, 4):
            cpu.adam_step(p, g, m, v, lr=1e-3, step=step, weight_decay=1e-4)
        return p, m, v

    assert_same_at_every_thread_count(sgd)
    assert_same_at_every_thread_count(adam)


# ---- training runs ----------------------------------------------------------------------------


def mlp():
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 96), nn.ReLU(), nn.Dropout(0.2), nn.Linear(96, 10)
    )


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 10),
    )


MODELS = {
    "mlp": (mlp, lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True)),
    "cnn": (cnn, lambda: optim.Adam(lr=2e-3, weight_decay=1e-4)),
}


def data(n=256):
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


def train(kind, backend, seed=3):
    make_model, make_opt = MODELS[kind]
    fastnn.seed(seed)
    model = make_model()
    x, y = data()
    history = fastnn.Trainer(model, make_opt(), backend=backend).fit(
        x, y, epochs=2, batch_size=64, validation_split=0.25, verbose=0
    )
    return model.state_dict(), history


def assert_same_run(a, b):
    (wa, ha), (wb, hb) = a, b
    assert wa.keys() == wb.keys()
    for name in wa:
        assert wa[name].tobytes() == wb[name].tobytes(), name
    assert ha["loss"] == hb["loss"] and ha["val_loss"] == hb["val_loss"]


@pytest.mark.parametrize("kind", sorted(MODELS))
@pytest.mark.parametrize("backend", ["cpu", "numpy"])
def test_same_seed_same_threads_gives_bitwise_identical_weights(kind, backend):
    first = train(kind, backend)
    assert_same_run(first, train(kind, backend))
    assert not np.array_equal(
        first[0]["1.weight" if kind == "mlp" else "0.weight"],
        train(kind, backend, seed=4)[0]["1.weight" if kind == "mlp" else "0.weight"],
    )


@needs_openmp
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_cpu_training_does_not_depend_on_the_thread_count(kind):
    runs = []
    for t in (1, 2):
        fastnn.set_num_threads(t)
        runs.append(train(kind, "cpu"))
    assert_same_run(*runs)


# ---- thread control ---------------------------------------------------------------------------


def test_set_num_threads_sets_openmp_and_blas_together():
    for t in (1, 2):
        fastnn.set_num_threads(t)
        assert fastnn.get_num_threads() == (t if openmp_enabled() else 1)
        blas = [
            p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"
        ]
        assert blas and all(n == t for n in blas)
    for bad in (0, -1, 1025, 2**31, 2**70):  # never an OverflowError or a crash later
        with pytest.raises(ValueError, match=r"n must be in \[1, 1024\]"):
            fastnn.set_num_threads(bad)
    with pytest.raises(TypeError, match="n must be an integer"):
        fastnn.set_num_threads(1.5)


_CHILD = r"""
import hashlib, json, sys
import numpy as np, threadpoolctl
import fastnn_testing
t = fastnn_testing.import_path({path!r})
import fastnn
weights, history = t.train("cnn", "cpu")
digest = hashlib.sha256(b"".join(weights[k].tobytes() for k in sorted(weights))).hexdigest()
blas = [p["num_threads"] for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
print(json.dumps({{"threads": fastnn.get_num_threads(), "blas": blas, "digest": digest}}))
"""


def run_child(omp_threads):
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_NUM_THREADS") and k != "OMP_THREAD_LIMIT"
    }
    env["OMP_NUM_THREADS"] = str(omp_threads)
    code = _CHILD.format(path=os.path.abspath(__file__))
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=fastnn_testing.child_env(env),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.dirname(os.path.abspath(__file__)),
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@needs_openmp
def test_omp_num_threads_is_the_default_and_does_not_change_results():
    one, two = run_child(1), run_child(2)
    assert one["threads"] == 1 and two["threads"] == 2
    # OpenBLAS, too, takes its default from OMP_NUM_THREADS (when OPENBLAS_NUM_THREADS is unset)
    assert one["blas"] == [1] * len(one["blas"]) and two["blas"] == [2] * len(two["blas"])
    assert one["digest"] == two["digest"]
    assert (
        one["digest"]
        == hashlib.sha256(
            b"".join(w.tobytes() for _, w in sorted(train("cnn", "cpu")[0].items()))
        ).hexdigest()
    )
