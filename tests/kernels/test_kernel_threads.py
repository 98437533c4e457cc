"""Every compiled kernel takes its thread count as an argument (`nthreads`, 0: fastnn's count)
and gives the same bits at any count; the optimizers' many-array kernels take their float type
from the first parameter, which must be the table's first row."""

import numpy as np
import pytest

from fastnn import get_num_threads, set_num_threads

conv = pytest.importorskip("fastnn._kernels.conv")
from fastnn._kernels import (  # noqa: E402
    activation,
    augment,
    avgpool,
    dense,
    gemm,
    loss,
    norm,
    optim,
    pool,
    runtime,
)


def normal(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def run_kernels(dtype, nthreads):
    """Outputs of every kernel on inputs above their parallel thresholds."""
    out = []
    x, w, b = normal((300, 200), dtype, 1), normal((150, 200), dtype, 2), normal(150, dtype, 3)
    y = np.empty((300, 150), dtype)
    dense.linear_forward(x, w, b, True, y, nthreads)
    dy = normal(y.shape, dtype, 4)
    dx, dw, db, work = (np.empty_like(x), np.empty_like(w), np.empty_like(b), np.empty_like(y))
    dense.linear_backward(x, w, y, dy, True, dx, dw, db, work, nthreads)
    out += [y, dx, dw, db]
    planes = normal((64 * 8, 16 * 16), dtype, 5)
    py, arg = np.empty((64 * 8, 64), dtype), np.empty((64 * 8, 64), np.int32)
    pool.maxpool_forward(planes, 16, 16, 2, 2, py, arg, 8, 8, nthreads)
    pdx = np.empty_like(planes)
    pool.maxpool_backward(py, arg, pdx, nthreads)
    out += [py, arg, pdx]
    logits, dlogits = normal((4000, 10), dtype, 6), np.empty((4000, 10), dtype)
    labels = np.random.default_rng(7).integers(0, 10, 4000)
    out += [np.array(loss.softmax_cross_entropy(logits, labels, dlogits, nthreads)), dlogits]
    cx, cw, cb = (
        normal((16, 3, 12, 12), dtype, 8),
        normal((8, 3, 3, 3), dtype, 9),
        normal(8, dtype, 10),
    )
    cy = np.empty((16, 8, 10, 10), dtype)
    conv.forward(cx, cw, cb, cy, 1, 0, True, algorithm="gemm", nthreads=nthreads)
    cdx, cdw, cdb = np.empty_like(cx), np.empty_like(cw), np.empty_like(cb)
    conv.backward(
        cx,
        cw,
        cy,
        normal(cy.shape, dtype, 11),
        cdx,
        cdw,
        cdb,
        1,
        0,
        True,
        algorithm="gemm",
        nthreads=nthreads,
    )
    out += [cy, cdx, cdw, cdb]
    out.append(gemm.matmul(x, w, transb=True, nthreads=nthreads))
    params = [normal(100_000, dtype, 12), normal(10, dtype, 13)]
    grads = [normal(p.shape, dtype, 14) for p in params]
    velocity = [np.zeros_like(p) for p in params]
    table = optim.address_table(list(zip(params, grads, velocity)))
    optim.sgd_step_many(table, params[0], 0.1, 0.9, 0.01, True, nthreads)
    m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    table = optim.address_table(list(zip(params, grads, m, v)))
    optim.adam_step_many(table, params[0], 1e-3, 0.9, 0.999, 0.1, 0.001, 1e-8, 0.0, nthreads)
    single = normal(100_000, dtype, 15)
    optim.sgd_step(single, grads[0], None, 0.1, 0.0, 0.0, False, nthreads)
    optim.adam_step(
        single,
        grads[0],
        np.zeros_like(single),
        np.zeros_like(single),
        1e-3,
        0.9,
        0.999,
        0.1,
        0.001,
        1e-8,
        0.0,
        nthreads,
    )
    out += params + velocity + m + v + [single]
    rows = normal((2000, 64), dtype, 16)
    gathered = np.empty_like(rows)
    index = np.random.default_rng(17).permutation(2000).astype(np.int64)
    runtime.gather_rows(rows.view(np.uint8), index, gathered.view(np.uint8), nthreads)
    out.append(gathered)
    return out + run_layer_kernels(dtype, nthreads)


def run_layer_kernels(dtype, nthreads):
    """Outputs of the batch norm, pooling, activation, smoothed loss and augment kernels."""
    n, c, h, w = 32, 16, 12, 12
    x = normal((n, c * h * w), dtype, 20)
    mean, var = np.empty(c), np.empty(c)
    norm.batch_stats(x, c, mean, var, nthreads)
    scale, shift = normal(c, np.float64, 21), normal(c, np.float64, 22)
    y = np.empty_like(x)
    norm.scale_shift(x, c, scale, shift, True, y, nthreads)
    dx, dgamma, dbeta = np.empty_like(x), np.empty(c), np.empty(c)
    norm.backward(
        x,
        y,
        normal(x.shape, dtype, 23),
        c,
        scale,
        mean,
        1 / np.sqrt(var + 1e-5),
        True,
        dx,
        dgamma,
        dbeta,
        nthreads,
    )
    out = [mean, var, y, dx, dgamma, dbeta]
    planes = x.reshape(n * c, h * w)
    pooled = np.empty((n * c, 36), dtype)
    avgpool.avgpool_forward(planes, h, w, 2, 2, pooled, 6, 6, nthreads)
    dplanes = np.empty_like(planes)
    avgpool.avgpool_backward(pooled, h, w, 2, 2, dplanes, 6, 6, nthreads)
    means = np.empty(n * c, dtype)
    avgpool.global_avgpool_forward(planes, means, nthreads)
    dmeans = np.empty_like(planes)
    avgpool.global_avgpool_backward(means, dmeans, nthreads)
    flat = x.reshape(-1)
    leaky, dleaky = np.empty_like(flat), np.empty_like(flat)
    activation.leaky_relu_forward(flat, 0.1, leaky, nthreads)
    activation.leaky_relu_backward(flat, leaky, 0.1, dleaky, nthreads)
    out += [pooled, dplanes, means, dmeans, leaky, dleaky]
    logits, dlogits = normal((4000, 10), dtype, 24), np.empty((4000, 10), dtype)
    labels = np.random.default_rng(25).integers(0, 10, 4000)
    smoothed = loss.smoothed_cross_entropy(logits, labels, 0.1, dlogits, nthreads)
    out += [np.array(smoothed), dlogits]
    images = normal((64, 1, 28 * 28), dtype, 26)
    index = np.random.default_rng(27).permutation(64).astype(np.int64)
    angles = np.random.default_rng(28).uniform(-0.2, 0.2, 64)
    matrices = np.stack([[np.cos(a), -np.sin(a), 1.0, np.sin(a), np.cos(a), -0.5] for a in angles])
    warped = np.empty_like(images)
    augment.gather_affine(images, index, matrices, 28, 28, warped, nthreads)
    return out + [warped]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_same_bits_at_every_explicit_thread_count(dtype):
    before = get_num_threads()
    try:
        set_num_threads(1)  # the argument, not fastnn's count, decides
        one = run_kernels(dtype, 1)
        for nthreads in (2, 3, 0):
            for a, b in zip(one, run_kernels(dtype, nthreads)):
                assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    finally:
        set_num_threads(before)


def test_many_array_optimizer_takes_its_type_from_the_first_parameter():
    params = [normal(10, np.float64), normal(3, np.float64, 1)]
    grads = [normal(10, np.float64, 2), normal(3, np.float64, 3)]
    expected = [p.copy() for p in params]
    for p, g in zip(expected, grads):
        optim.sgd_step(p, g, None, 0.5, 0.0, 0.0, False)
    table = optim.address_table([(p, g, None) for p, g in zip(params, grads)])
    with pytest.raises(ValueError, match="first_param"):
        optim.sgd_step_many(table, params[1], 0.5, 0.0, 0.0, False)
    with pytest.raises((TypeError, ValueError)):
        optim.sgd_step_many(table, params[0].astype(np.float32), 0.5, 0.0, 0.0, False)
    optim.sgd_step_many(table, params[0], 0.5, 0.0, 0.0, False)
    for p, e in zip(params, expected):
        assert p.tobytes() == e.tobytes()


def test_layer_kernels_on_several_threads_mark_the_openmp_pool_for_fork(tmp_path):
    """The fork hook (fastnn._threads) drops a child to one thread only when a kernel may have
    started OpenMP's pool; the layer kernels resolve their count through the runtime too."""
    import subprocess
    import sys

    script = (
        "import numpy as np, fastnn\n"
        "from fastnn._kernels import norm, runtime\n"
        "fastnn.set_num_threads(2)\n"
        "assert not runtime.pool_may_exist()\n"
        "x = np.ones((64, 16 * 144), np.float32)\n"
        "norm.batch_stats(x, 16, np.empty(16), np.empty(16), 0)\n"
        "print(runtime.pool_may_exist())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "True"
