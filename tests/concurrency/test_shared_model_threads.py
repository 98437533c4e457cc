"""One trained model shared by several threads: predict, predict_proba and evaluate from any
number of threads give bitwise the results of the same calls made one after another."""

import threading

import numpy as np
import pytest

import fastnn
from fastnn import backends, nn

BACKENDS = ["numpy"] + (["cpu"] if backends.available()["cpu"] else [])
BATCHES = (1, 7, 256, 2000)


def mlp(backend):
    fastnn.seed(3)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10), backend=backend
    )


def images(n, seed):
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def run_threads(work, count):
    """Run work(i) on `count` threads started together; re-raise the first error."""
    errors = []
    barrier = threading.Barrier(count)

    def body(i):
        try:
            barrier.wait()
            work(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_predict_from_three_threads_matches_serial(backend):
    model = mlp(backend)
    inputs = [images(n, seed) for seed, n in enumerate(BATCHES)]
    # float inputs take the plan's direct path, uint8 the converting one: both are shared
    inputs += [x.astype(np.float32) / 255 for x in inputs]
    expected = [(model.predict(x), model.predict_proba(x)) for x in inputs]
    wrong = []

    def work(i):
        for round_ in range(4):
            for k in range(len(inputs)):
                k = (k + i + round_) % len(inputs)  # threads run different batch sizes at once
                labels, proba = model.predict(inputs[k]), model.predict_proba(inputs[k])
                if labels.tobytes() != expected[k][0].tobytes():
                    wrong.append(("predict", k))
                if proba.tobytes() != expected[k][1].tobytes():
                    wrong.append(("predict_proba", k))

    run_threads(work, 3)
    assert not wrong, f"{len(wrong)} concurrent results differ from serial ones: {wrong[:5]}"


@pytest.mark.parametrize("backend", BACKENDS)
def test_batchnorm_models_predict_from_threads_like_serially(backend):
    # evaluation folds each BatchNorm into the layer before it, on every pass, into arrays
    # local to that pass: concurrent passes share nothing they write and agree bitwise
    from fastnn import Trainer, optim

    fastnn.seed(5)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 13 * 13, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 10),
        backend=backend,
    )
    x = images(64, 9)
    Trainer(model, optim.SGD(lr=0.05), backend=backend, seed=1).fit(
        x, np.arange(64) % 10, epochs=1, batch_size=16, verbose=0
    )
    inputs = [x[:1], x[:7], x]
    expected = [(model.predict(v), model.predict_proba(v)) for v in inputs]
    wrong = []

    def work(i):
        for _ in range(3):
            for k, v in enumerate(inputs):
                if (
                    model.predict(v).tobytes() != expected[k][0].tobytes()
                    or model.predict_proba(v).tobytes() != expected[k][1].tobytes()
                ):
                    wrong.append(k)

    run_threads(work, 3)
    assert not wrong, f"{len(wrong)} concurrent results differ from serial ones"
