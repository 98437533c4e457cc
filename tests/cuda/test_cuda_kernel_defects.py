"""Defects 4 and 5 of issue 11: conv im2col chunked over the batch with a bounded workspace,
and a deterministic max-pool backward (a gather, no float atomicAdd)."""

import numpy as np
import pytest

from fastnn.backends.cuda import sources
from fastnn.backends.numpy import NumpyBackend


@pytest.mark.parametrize("workspace, chunked", [(1 << 24, False), (700, True), (1, True)])
def test_conv_runs_in_chunks_of_samples_within_the_workspace(
    fake_cuda, fake_cupy, workspace, chunked
):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 2, 6, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    ref = NumpyBackend()
    y_ref = ref.conv2d_forward(x, w, b, 1, 1, True)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    grads_ref = ref.conv2d_backward(x, w, y_ref, dy, 1, 1, True)
    fake_cuda.workspace_floats = workspace
    dev = [fake_cuda.asarray(a) for a in (x, w, b, dy)]
    fake_cupy.stats.reset()
    y = fake_cuda.conv2d_forward(*dev[:3], 1, 1, True)
    grads = fake_cuda.conv2d_backward(dev[0], dev[1], y, dev[3], 1, 1, True)
    np.testing.assert_allclose(y.get(), y_ref, rtol=2e-5, atol=2e-6)
    for got, expected in zip(grads, grads_ref):
        np.testing.assert_allclose(got.get(), expected, rtol=2e-5, atol=2e-5)
    taps_positions = 2 * 3 * 3 * 36  # one sample's column matrix
    # the forward pass's (samples, K, P) and the backward pass's flat tap-major workspaces
    columns = [
        int(np.prod(s))
        for s in fake_cupy.stats.allocations
        if s[1:] == (18, 36) or (len(s) == 1 and s[0] % taps_positions == 0)
    ]
    assert len(columns) == 2, fake_cupy.stats.allocations
    largest = max(columns)
    if chunked:
        assert largest <= max(workspace, taps_positions)
        assert fake_cupy.stats.kernels["im2col"] > 2  # forward and backward ran in pieces
    else:
        assert largest == 5 * taps_positions and fake_cupy.stats.kernels["im2col"] == 2


def test_an_evaluate_batch_of_any_size_is_chunked(fake_cuda):
    # Conv2d(32, 64, 3, padding=1) on 28x28 at N = 9,500: the whole batch's column matrix
    # would be 2.1 G floats (8.6 GB, past the kernels' int32 sizes); chunks stay in bounds
    per_sample = 32 * 3 * 3 * 28 * 28
    chunks = fake_cuda._chunks(9500, per_sample)
    assert chunks[0][0] == 0 and chunks[-1][1] == 9500
    assert all(a[1] == b[0] for a, b in zip(chunks, chunks[1:]))
    assert max(hi - lo for lo, hi in chunks) * per_sample <= fake_cuda.workspace_floats


@pytest.mark.parametrize(
    "shape, kernel, stride", [((2, 3, 7, 7), 3, 1), ((1, 2, 8, 9), 3, 2), ((2, 2, 6, 6), 2, None)]
)
def test_maxpool_backward_is_the_reference_bit_for_bit(fake_cuda, shape, kernel, stride):
    # overlapping windows (stride < kernel) send several gradients to one input; with few
    # distinct values many windows share a maximum. The gather adds them in output order, as
    # the reference's np.add.at does, so the bits match and every run is the same
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=shape).astype(np.float32)
    ref = NumpyBackend()
    y_ref, arg_ref = ref.maxpool2d_forward(x, kernel, stride)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    dx_ref = ref.maxpool2d_backward(dy, arg_ref, shape, kernel, stride)
    _, arg = fake_cuda.maxpool2d_forward(fake_cuda.asarray(x), kernel, stride)
    runs = [
        fake_cuda.maxpool2d_backward(fake_cuda.asarray(dy), arg, shape, kernel, stride).get()
        for _ in range(2)
    ]
    assert runs[0].tobytes() == dx_ref.tobytes() == runs[1].tobytes()


def test_no_kernel_adds_floats_atomically():
    for family in sources.FAMILIES:
        assert "atomicAdd" not in sources.path(family).read_text(), family
