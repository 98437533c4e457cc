"""Threads on the cuda backend, through the CuPy stand-in: several threads predicting with one
shared model and training models of their own (each with its own seed) at once give bitwise
the serial results; and a non-finite loss in one thread's fit skips only that model's
updates (the backend's running-metrics guard is per thread).

The stand-in's host harness runs one kernel launch at a time (`one_stream`), as one CUDA stream
executes them in order; fastnn's own state is what these tests exercise."""

import sys
import threading

import numpy as np
import pytest

import fastnn
from fastnn import callbacks, nn, optim

rng = np.random.default_rng(0)
X = rng.integers(0, 256, size=(48, 8, 8), dtype=np.uint8)
Y = rng.integers(0, 3, 48)


@pytest.fixture
def one_stream(fake_cuda, monkeypatch):
    harness = sys.modules["fastnn_tests_host_harness"]  # loaded by tests/cuda/conftest.py
    launch = harness.HostFunction.__call__
    lock = threading.Lock()

    def serialized(self, *args, **kwargs):
        with lock:
            return launch(self, *args, **kwargs)

    monkeypatch.setattr(harness.HostFunction, "__call__", serialized)
    return fake_cuda


def mlp(seed):
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 16),
        nn.ReLU(),
        nn.Dropout(0.25),
        nn.Linear(16, 3),
        backend="cuda",
        seed=seed,
    )


def train(seed):
    model = mlp(seed)
    trainer = fastnn.Trainer(model, optim.Adam(lr=0.01), backend="cuda", seed=seed)
    trainer.fit(X, Y, epochs=1, batch_size=16, validation_split=0.25, verbose=0)
    return model.state_dict()


def same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return np.asarray(a).tobytes() == np.asarray(b).tobytes()


def run_threads(work, count):
    errors = []

    def body(i):
        try:
            work(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not any(t.is_alive() for t in threads), "threads still running: deadlock?"
    if errors:
        raise errors[0]


def test_threads_predicting_and_training_match_serial_results(one_stream):
    shared = mlp(1)
    fastnn.Trainer(shared, optim.SGD(lr=0.1), backend="cuda", seed=2).fit(
        X, Y, epochs=1, batch_size=16, verbose=0
    )
    inputs = [X[:1], X[:5], X]
    expected_predictions = [(shared.predict(x), shared.predict_proba(x)) for x in inputs]
    expected_weights = {seed: train(seed) for seed in (3, 4)}
    wrong = []

    def work(i):
        if i < 2:
            if not same(train(3 + i), expected_weights[3 + i]):
                wrong.append(f"train {3 + i}")
        for _ in range(2):
            for x, (labels, proba) in zip(inputs, expected_predictions):
                if not (same(shared.predict(x), labels) and same(shared.predict_proba(x), proba)):
                    wrong.append(f"predict {len(x)}")

    run_threads(work, 4)
    assert not wrong, wrong


def test_a_non_finite_loss_in_one_thread_leaves_the_other_threads_model_alone(one_stream):
    x_bad = X.astype(np.float32)
    x_bad[::2] = np.float32(3e38)  # overflows the logits: the first step's loss is non-finite
    healthy_alone = train(5)
    healthy_running, bad_flagged, healthy_done = (threading.Event() for _ in range(3))
    results = {}

    def healthy_pause(trainer, epoch, step, loss):
        if step == 0:  # its epoch's metrics are open: let the bad fit open and flag its own
            healthy_running.set()
            assert bad_flagged.wait(60)

    def bad_pause(trainer, epoch, step, loss):
        if step == 0:  # flagged, not yet stopped: the healthy fit takes its steps meanwhile
            bad_flagged.set()
            assert healthy_done.wait(60)

    def work(i):
        if i == 0:
            model = mlp(5)
            trainer = fastnn.Trainer(model, optim.Adam(lr=0.01), backend="cuda", seed=5)
            trainer.fit(
                X,
                Y,
                epochs=1,
                batch_size=16,
                validation_split=0.25,
                verbose=0,
                callbacks=callbacks.LambdaCallback(on_batch_end=healthy_pause),
            )
            results["healthy"] = model.state_dict()
            healthy_done.set()
        else:
            assert healthy_running.wait(60)
            trainer = fastnn.Trainer(mlp(6), optim.SGD(lr=1.0), backend="cuda", seed=6)
            with pytest.raises(fastnn.NonFiniteLossError):
                trainer.fit(
                    x_bad,
                    Y,
                    epochs=1,
                    batch_size=16,
                    verbose=0,
                    callbacks=callbacks.LambdaCallback(on_batch_end=bad_pause),
                )
            results["bad"] = "stopped"

    run_threads(work, 2)
    assert results["bad"] == "stopped"
    assert same(results["healthy"], healthy_alone)
