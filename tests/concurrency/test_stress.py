"""Stress: several threads at once, on shared trained models (predict, predict_proba,
evaluate) and on models of their own (training with their own seeds), with several batch
sizes; every result must be bitwise the result of the same call made serially."""

import threading

import numpy as np
import pytest

import fastnn
from fastnn import Trainer, backends, nn, optim

BACKENDS = ["numpy"] + (["cpu"] if backends.available()["cpu"] else [])
THREADS = 4
JOIN_TIMEOUT_S = 240  # a deadlock fails the test instead of stalling the run

rng = np.random.default_rng(0)
X = rng.integers(0, 256, (600, 28, 28), dtype=np.uint8)
Y = rng.integers(0, 10, 600)


def mlp(seed, backend, dropout=0.0):
    layers = [nn.Flatten(), nn.Linear(784, 48), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(48, 10), backend=backend, seed=seed)


def cnn(seed, backend):
    return nn.Sequential(
        nn.Conv2d(1, 4, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 12 * 12, 10),
        backend=backend,
        seed=seed,
    )


def train(build, seed, backend):
    """A model of its own, trained with its own seeds (shuffle, dropout, validation split)."""
    model = build(seed, backend)
    trainer = Trainer(model, optim.Adam(lr=1e-3), backend=backend, seed=seed)
    trainer.fit(X[:320], Y[:320], epochs=1, batch_size=40, validation_split=0.25, verbose=0)
    steps = [
        float(trainer.train_step(model.prepare_input(X[i : i + 16]), Y[i : i + 16]))
        for i in range(0, 64, 16)
    ]
    history = {k: v for k, v in trainer.history.items() if k not in ("epoch_time", "samples_per_s")}
    return {"weights": model.state_dict(), "history": history, "steps": steps}


def shared_models(backend):
    models = {"mlp": mlp(1, backend), "cnn": cnn(2, backend)}
    for model in models.values():
        Trainer(model, optim.SGD(lr=0.05), backend=backend, seed=3).fit(
            X, Y, epochs=1, batch_size=100, verbose=0
        )
    return models


def tasks(models, backend):
    """(name, call) pairs: inference on the shared models and training of private ones."""
    out = []
    for name, model in models.items():
        evaluator = Trainer(model, optim.SGD(lr=0.1), backend=backend)
        for n in (1, 5, 64, 600):
            x = X[:n]
            out.append((f"{name} predict {n}", lambda m=model, x=x: m.predict(x)))
            out.append((f"{name} proba {n}", lambda m=model, x=x: m.predict_proba(x)))
        out.append((f"{name} predict float", lambda m=model: m.predict(X[:33] / 255.0)))
        out.append((f"{name} evaluate", lambda t=evaluator: t.evaluate(X, Y, batch_size=256)))
    for seed in range(3):
        out.append(
            (
                f"train mlp+dropout {seed}",
                lambda s=seed: train(lambda s_, b: mlp(s_, b, dropout=0.3), s, backend),
            )
        )
    out.append(("train cnn", lambda: train(cnn, 7, backend)))
    return out


def same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(u, v) for u, v in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_threads_match_serial_results(backend):
    fastnn.seed(11)  # threads with no stream of their own draw from it: none should
    models = shared_models(backend)
    work = tasks(models, backend)
    expected = [call() for _, call in work]
    errors, wrong = [], []
    barrier = threading.Barrier(THREADS)

    inference = [i for i, (name, _) in enumerate(work) if not name.startswith("train")]
    training = [i for i in range(len(work)) if i not in inference]

    def body(t):
        try:
            # every thread runs every training task once and the short inference tasks
            # several times, in an order of its own
            order = np.random.default_rng(t).permutation(training + inference * 4)
            barrier.wait()
            for i in order:
                name, call = work[i]
                if not same(call(), expected[i]):
                    wrong.append(name)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(t,), daemon=True) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_TIMEOUT_S)
    assert not any(t.is_alive() for t in threads), "threads still running: deadlock?"
    if errors:
        raise errors[0]
    assert not wrong, f"{len(wrong)} results differ from the serial ones: {sorted(set(wrong))}"
