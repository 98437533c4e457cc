"""The cpu backend's whole-model entry points (sgd_step_many, adam_step_many, count_correct)
and the layers' unchecked training passes: the same numbers as the per-array, checked calls."""

import numpy as np
import pytest

import fastnn
from fastnn import backends, nn, optim
from fastnn.backends.numpy import NumpyBackend

cpu = backends.get("cpu")
ref = NumpyBackend()

# a 1-element bias, a prime-sized array, and one spanning several of the kernel's chunks
SIZES = [(1,), (7, 13), (300, 97), (10,)]


def _arrays(rng, dtype, count):
    return [[rng.standard_normal(shape).astype(dtype) for shape in SIZES] for _ in range(count)]


@pytest.mark.parametrize(
    "momentum,nesterov,decay",
    [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 5e-4), (0.5, False, 1e-2)],
)
def test_sgd_step_many_equals_sgd_step(dtype, momentum, nesterov, decay):
    rng = np.random.default_rng(0)
    params, grads, vels = _arrays(rng, dtype, 3)
    expected_p = [p.copy() for p in params]
    expected_v = [v.copy() for v in vels]
    for _ in range(3):  # the second and third calls take the remembered table
        for p, g, v in zip(expected_p, grads, expected_v):
            cpu.sgd_step(
                p,
                g,
                v if momentum else None,
                lr=0.1,
                momentum=momentum,
                weight_decay=decay,
                nesterov=nesterov,
            )
        cpu.sgd_step_many(
            params,
            grads,
            vels if momentum else None,
            lr=0.1,
            momentum=momentum,
            weight_decay=decay,
            nesterov=nesterov,
        )
        for a, b in zip(params + vels, expected_p + expected_v):
            np.testing.assert_array_equal(a, b)


def test_adam_step_many_equals_adam_step(dtype):
    rng = np.random.default_rng(1)
    params, grads, ms, vs = _arrays(rng, dtype, 4)
    vs = [np.abs(v) for v in vs]
    expected = [[a.copy() for a in group] for group in (params, ms, vs)]
    for step in (1, 2, 3):
        for p, g, m, v in zip(expected[0], grads, expected[1], expected[2]):
            cpu.adam_step(p, g, m, v, lr=1e-3, step=step, weight_decay=1e-4)
        cpu.adam_step_many(params, grads, ms, vs, lr=1e-3, step=step, weight_decay=1e-4)
        for got, want in zip((params, ms, vs), expected):
            for a, b in zip(got, want):
                np.testing.assert_array_equal(a, b)


def test_sgd_step_many_follows_replaced_arrays():
    """A table is remembered for the very same arrays only: a new gradient array is read."""
    p = [np.ones(5, np.float32)]
    cpu.sgd_step_many(p, [np.ones(5, np.float32)], lr=1.0)
    cpu.sgd_step_many(p, [np.full(5, 2.0, np.float32)], lr=1.0)
    np.testing.assert_array_equal(p[0], np.full(5, -2.0, np.float32))


def test_sgd_step_many_copies_a_strided_gradient():
    p = [np.zeros(4, np.float32)]
    grad = np.arange(8, dtype=np.float32)[::2]
    for _ in range(2):
        cpu.sgd_step_many(p, [grad], lr=1.0)
    np.testing.assert_array_equal(p[0], -2 * grad)


def test_many_refuses_bad_arguments():
    p = np.zeros(6, np.float32)
    with pytest.raises(ValueError, match="overlap"):
        cpu.sgd_step_many([p[:4], p[2:]], [np.ones(4, np.float32)] * 2, lr=0.1)
    with pytest.raises(ValueError, match="overlap"):
        cpu.sgd_step_many([p], [p], lr=0.1)
    with pytest.raises(TypeError, match="one dtype"):
        cpu.sgd_step_many(
            [np.zeros(2, np.float32), np.zeros(2)], [np.zeros(2, np.float32), np.zeros(2)], lr=0.1
        )
    with pytest.raises(ValueError, match="velocity"):
        cpu.sgd_step_many(
            [np.zeros(2, np.float32)], [np.zeros(2, np.float32)], [None], lr=0.1, momentum=0.9
        )
    with pytest.raises(ValueError, match="same length"):
        cpu.sgd_step_many([p], [], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        cpu.sgd_step_many([p], [np.ones(6, np.float32)], lr=-1.0)
    with pytest.raises(ValueError, match="shape"):
        cpu.sgd_step_many([p], [np.ones(5, np.float32)], lr=0.1)
    with pytest.raises(TypeError, match="m and v"):
        cpu.adam_step_many([p], [np.ones(6, np.float32)], [None], [None], lr=0.1, step=1)


def test_count_correct_is_numpy_argmax(dtype):
    rng = np.random.default_rng(2)
    out = rng.integers(0, 3, size=(257, 10)).astype(dtype)  # many ties: the first max wins
    out[5, 3] = np.nan
    out[6, 0] = np.nan
    out[7, :] = np.nan
    out[8, 9] = -np.inf
    out[9, 4] = np.inf
    labels = rng.integers(0, 10, size=257)
    labels[5], labels[6], labels[9] = 3, 0, 4
    assert cpu.count_correct(out, labels) == int((out.argmax(axis=1) == labels).sum())
    assert cpu.count_correct(out[:, :1], labels) == int((labels == 0).sum())
    with pytest.raises(ValueError, match="labels"):
        cpu.count_correct(out, labels[:3])


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda: optim.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
        lambda: optim.Adam(lr=1e-3),
    ],
)
def test_training_matches_the_reference_backend(optimizer):
    """A fit on cpu (unchecked passes, one optimizer call) against the same fit on numpy."""
    rng = np.random.default_rng(3)
    x = rng.random((203, 29)).astype(np.float32)  # a last batch of 11 rows
    y = rng.integers(0, 5, size=203)
    results = []
    for backend in ("cpu", "numpy"):
        fastnn.seed(4)
        model = nn.Sequential(
            nn.Linear(29, 31), nn.ReLU(), nn.Linear(31, 17), nn.Tanh(), nn.Linear(17, 5)
        )
        trainer = fastnn.Trainer(model, optimizer(), loss="cross_entropy", backend=backend)
        history = trainer.fit(x, y, epochs=2, batch_size=32, verbose=0)
        results.append((model.state_dict(), history["loss"], history["accuracy"]))
    (cpu_state, cpu_loss, cpu_acc), (ref_state, ref_loss, ref_acc) = results
    for name in ref_state:
        np.testing.assert_allclose(cpu_state[name], ref_state[name], rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(cpu_loss, ref_loss, rtol=1e-4)
    assert cpu_acc == pytest.approx(ref_acc, abs=2 / 203)


def test_train_step_with_a_strided_batch_takes_the_checked_path():
    fastnn.seed(5)
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    trainer = fastnn.Trainer(model, optim.SGD(lr=0.1), loss="cross_entropy", backend="cpu")
    x = np.random.default_rng(6).random((16, 16)).astype(np.float32)
    y = np.arange(16, dtype=np.int64) % 3
    before = model.state_dict()
    loss = trainer.train_step(x[:, ::2], y)  # not C-contiguous
    again = fastnn.Trainer(
        nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3)),
        optim.SGD(lr=0.1),
        loss="cross_entropy",
        backend="cpu",
    )
    again.model.load_state_dict(before)
    assert float(again.train_step(np.ascontiguousarray(x[:, ::2]), y)) == float(loss)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, again.model.state_dict()[name])


# ---- the compiled inference plan (fastnn.inference) -----------------------------------------


def _mlp(dtype=np.float32, hidden=(37, 11), classes=7, flatten=True, backend="cpu"):
    fastnn.seed(7)
    layers = [nn.Flatten()] if flatten else []
    sizes = (5 * 6, *hidden)
    for fin, fout in zip(sizes, sizes[1:]):
        layers += [nn.Linear(fin, fout), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], classes))
    return nn.Sequential(*layers, dtype=dtype, backend=backend)


def _general_outputs(model, x):
    """The outputs through the layers one by one (the path without the plan)."""
    return model.forward(model.prepare_input(x), False)


@pytest.mark.parametrize("n", [1, 2, 5, 13, 1024, 1031])
def test_plan_predicts_as_the_layers(dtype, n):
    model = _mlp(dtype)
    x = np.random.default_rng(n).standard_normal((n, 5, 6)).astype(dtype)
    assert model._dense_plan() is not None
    expected = _general_outputs(model, x)
    for _ in range(2):  # the first call validates the shape, the second takes the fast path
        np.testing.assert_array_equal(model.predict(x), expected.argmax(axis=1))
    proba = model.predict_proba(x)
    e = np.exp(expected - expected.max(axis=1, keepdims=True))
    np.testing.assert_allclose(proba, e / e.sum(axis=1, keepdims=True), rtol=1e-6, atol=1e-7)
    assert model.predict(x, batch_size=3).tolist() == expected.argmax(axis=1).tolist()


def test_plan_takes_uint8_images_and_refuses_nan():
    model = _mlp()
    images = np.random.default_rng(8).integers(0, 256, size=(9, 5, 6), dtype=np.uint8)
    expected = _general_outputs(model, images).argmax(axis=1)
    np.testing.assert_array_equal(model.predict(images), expected)
    x = (images / np.float32(255)).astype(np.float32)
    model.predict(x)
    x[4, 2, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.predict(x)
    x[4, 2, 3] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        model.predict(x)
    with pytest.raises(ValueError, match="does not fit|features"):
        model.predict(np.zeros((2, 31), np.float32))


def test_plan_follows_new_weights_and_backends():
    model = _mlp(flatten=False)
    x = np.random.default_rng(9).standard_normal((6, 30)).astype(np.float32)
    before = model.predict_proba(x)
    state = {k: -v for k, v in model.state_dict().items()}
    model.load_state_dict(state)  # new parameter arrays: the plan is rebuilt
    after = model.predict_proba(x)
    np.testing.assert_allclose(after, _mlp_ref_proba(state, x), rtol=1e-5, atol=1e-6)
    assert not np.allclose(before, after)
    model.to("numpy")
    assert model._dense_plan() is None
    np.testing.assert_allclose(model.predict_proba(x), after, rtol=1e-5, atol=1e-6)


def _mlp_ref_proba(state, x):
    ref_model = _mlp(flatten=False, backend="numpy")
    ref_model.load_state_dict(state)
    return ref_model.predict_proba(x)


def test_plan_only_for_plain_chains_of_linear_layers():
    fastnn.seed(10)
    assert nn.Sequential(nn.Linear(4, 3), nn.Sigmoid(), nn.Linear(3, 2))._dense_plan() is None
    assert nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.Linear(3, 2))._dense_plan() is None
    assert nn.Sequential(nn.Linear(4, 3), nn.Tanh())._dense_plan() is None
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = np.random.default_rng(11).standard_normal((3, 4)).astype(np.float32)
    assert model._dense_plan() is not None
    np.testing.assert_array_equal(model.predict(x), _general_outputs(model, x).argmax(axis=1))


@pytest.mark.parametrize(
    "dtype,shape",
    [(np.float32, (300, 784)), (np.float64, (50, 1, 5, 7)), (np.uint8, (70, 3)), (np.int64, (9,))],
)
def test_gather_rows_is_take(dtype, shape):
    rng = np.random.default_rng(12)
    x = (rng.standard_normal(shape) * 100).astype(dtype)
    index = rng.integers(0, shape[0], size=37)
    out = np.empty((37, *shape[1:]), dtype)
    assert cpu.gather_rows(x, index, out) is out
    np.testing.assert_array_equal(out, np.take(x, index, axis=0))
    with pytest.raises(IndexError):
        cpu.gather_rows(x, np.array([0, shape[0]]), out[:2])
    with pytest.raises(IndexError):
        cpu.gather_rows(x, np.array([-1]), out[:1])
    with pytest.raises(ValueError, match="index"):
        cpu.gather_rows(x, index[:3], out)
    with pytest.raises(ValueError, match="rows of x"):
        cpu.gather_rows(x, index, np.empty((37, *shape[1:]), np.float16))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 9])
def test_plan_outputs_bitwise_at_any_thread_count(n):
    """The chain's one parallel region (few rows) slices every layer's outputs over the
    threads: the same bits as the layers' own GEMM calls, at 1, 2 and 3 threads."""
    fastnn.seed(13)
    model = nn.Sequential(
        nn.Linear(300, 203), nn.ReLU(), nn.Linear(203, 97), nn.ReLU(), nn.Linear(97, 10)
    )
    x = np.random.default_rng(n).standard_normal((n, 300)).astype(np.float32)
    before = fastnn.get_num_threads()
    try:
        results = []
        for threads in (1, 2, 3):
            fastnn.set_num_threads(threads)
            results.append((model._dense_plan().outputs(x), _general_outputs(model, x)))
    finally:
        fastnn.set_num_threads(before)
    for plan_out, layer_out in results:
        np.testing.assert_array_equal(plan_out, results[0][1])
        np.testing.assert_array_equal(layer_out, results[0][1])


def test_row_gatherer_takes_any_shorter_index():
    x = np.arange(60, dtype=np.float32).reshape(20, 3)
    out = np.empty((8, 3), np.float32)
    gather = cpu.row_gatherer(x, out)
    assert gather(np.arange(8, dtype=np.int64)[::-1].copy()) is out
    np.testing.assert_array_equal(out, x[7::-1])
    part = gather(np.array([19, 0, 5], dtype=np.int64))
    np.testing.assert_array_equal(part, x[[19, 0, 5]])
    assert part.base is out or np.shares_memory(part, out)
    with pytest.raises(IndexError):
        gather(np.array([20], dtype=np.int64))
    with pytest.raises(ValueError, match="rows of x"):
        cpu.row_gatherer(x, np.empty((8, 4), np.float32))


@pytest.mark.parametrize("backend", [cpu, ref], ids=["cpu", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(40, 784), (33, 1, 5, 7), (5, 1)])
def test_row_gatherer_scales_uint8_as_to_float(backend, dtype, shape):
    rng = np.random.default_rng(13)
    x = rng.integers(0, 256, size=shape, dtype=np.uint8)
    x.reshape(-1)[:256] = np.arange(256)[: x.size]  # every byte value where there is room
    out = np.empty((16, *shape[1:]), dtype)
    gather = backend.row_gatherer(x, out)
    index = rng.integers(0, shape[0], size=11)
    part = gather(index)
    expected = fastnn.datasets.to_float(x, dtype=dtype)[index]
    assert part.dtype == dtype and part.shape == expected.shape
    assert part.tobytes() == expected.tobytes()  # bit for bit, -0.0 and all
    index = np.arange(16, dtype=np.int64) % shape[0]
    whole = gather(index)
    assert np.shares_memory(whole, out) and whole.shape == out.shape
    assert whole.tobytes() == fastnn.datasets.to_float(x, dtype=dtype)[index].tobytes()
    with pytest.raises(IndexError):
        gather(np.array([shape[0]], dtype=np.int64))


def test_scaled_row_gatherer_refuses_other_rows():
    x = np.zeros((20, 3), np.uint8)
    with pytest.raises(ValueError, match="rows of x"):
        cpu.row_gatherer(x, np.empty((8, 4), np.float32))
    with pytest.raises(ValueError, match="rows of x"):
        cpu.row_gatherer(x, np.empty((8, 3), np.float16))
