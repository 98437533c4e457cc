"""Training and threads: one model trains in one thread at a time (another thread's fit or
train_step is refused at once, the weights untouched); separate models train in parallel; a
Trainer or Sequential with a seed repeats its run whatever other threads draw."""

import threading

import numpy as np
import pytest

import fastnn
from fastnn import ConcurrentTrainingError, Trainer, backends, callbacks, nn, optim

BACKENDS = ["numpy"] + (["cpu"] if backends.available()["cpu"] else [])

rng = np.random.default_rng(0)
X = rng.integers(0, 256, (200, 28, 28), dtype=np.uint8)
Y = rng.integers(0, 10, 200)


def mlp(backend="numpy", seed=1):
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 16),
        nn.ReLU(),
        nn.Dropout(0.2),
        nn.Linear(16, 10),
        backend=backend,
        seed=seed,
    )


def same_weights(a, b):
    return all(a[k].tobytes() == b[k].tobytes() for k in a) and a.keys() == b.keys()


def in_thread(call):
    """call() on another thread; returns what it raised (None if nothing)."""
    raised = []

    def body():
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            raised.append(exc)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "the other thread waited instead of being refused"
    return raised[0] if raised else None


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_thread_training_the_same_model_is_refused(backend):
    model = mlp(backend)
    trainer = Trainer(model, optim.SGD(lr=0.1), backend=backend, seed=5)
    other = Trainer(model, optim.SGD(lr=0.1), backend=backend)  # another optimizer, same model
    refused = []

    def intrude(trainer_, epoch, step, loss):
        if (epoch, step) == (0, 1):  # mid-fit: another thread tries both ways in
            refused.append(in_thread(lambda: other.fit(X, Y, epochs=1, verbose=0)))
            xb = model.prepare_input(X[:8])
            refused.append(in_thread(lambda: other.train_step(xb, Y[:8])))
            refused.append(in_thread(lambda: trainer.train_step(xb, Y[:8])))

    trainer.fit(
        X,
        Y,
        epochs=2,
        batch_size=32,
        verbose=0,
        callbacks=callbacks.LambdaCallback(on_batch_end=intrude),
    )
    assert len(refused) == 3
    for exc in refused:
        assert isinstance(exc, ConcurrentTrainingError), exc
        assert "another thread" in str(exc)
    # the refused calls changed nothing: the same run without them
    alone = mlp(backend)
    Trainer(alone, optim.SGD(lr=0.1), backend=backend, seed=5).fit(
        X, Y, epochs=2, batch_size=32, verbose=0
    )
    assert same_weights(model.state_dict(), alone.state_dict())
    # and the claim ends with the fit: the other trainer may now train the model
    assert in_thread(lambda: other.fit(X, Y, epochs=1, verbose=0)) is None


def test_one_optimizer_on_two_models_at_once_is_refused():
    shared = optim.SGD(lr=0.1)
    first, second = Trainer(mlp(), shared), Trainer(mlp(seed=2), shared)
    refused = []
    first.fit(
        X,
        Y,
        epochs=1,
        batch_size=100,
        verbose=0,
        callbacks=callbacks.LambdaCallback(
            on_batch_end=lambda *a: refused.append(
                in_thread(lambda: second.fit(X, Y, epochs=1, verbose=0))
            )
        ),
    )
    assert refused and all(
        isinstance(e, ConcurrentTrainingError) and "optimizer" in str(e) for e in refused
    )


def test_the_claim_is_released_when_fit_raises():
    model = mlp()
    trainer = Trainer(model, optim.SGD(lr=0.1))
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(
            X,
            Y,
            epochs=1,
            verbose=0,
            callbacks=callbacks.LambdaCallback(
                on_batch_end=lambda *a: (_ for _ in ()).throw(RuntimeError("boom"))
            ),
        )
    assert in_thread(lambda: trainer.fit(X, Y, epochs=1, verbose=0)) is None


def test_the_training_thread_may_call_train_step_from_a_callback():
    model = mlp()
    trainer = Trainer(model, optim.SGD(lr=0.1))
    xb = model.prepare_input(X[:8])
    trainer.fit(
        X,
        Y,
        epochs=1,
        batch_size=100,
        verbose=0,
        callbacks=callbacks.LambdaCallback(on_epoch_end=lambda *a: trainer.train_step(xb, Y[:8])),
    )


def run(seed, backend="numpy"):
    model = mlp(backend, seed=seed)
    trainer = Trainer(model, optim.Adam(lr=1e-3), backend=backend, seed=seed)
    trainer.fit(X, Y, epochs=2, batch_size=32, validation_split=0.2, verbose=0)
    return model.state_dict()


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_runs_in_parallel_threads_repeat_their_serial_results(backend):
    serial = {seed: run(seed, backend) for seed in range(3)}
    parallel = {}
    threads = [
        threading.Thread(target=lambda s=s: parallel.update({s: run(s, backend)}))
        for s in range(3)
        for _ in range(2)
    ]  # each seed twice, all at once
    fastnn.seed(0)
    noise = threading.Thread(
        target=lambda: [
            fastnn.nn.Dropout(0.5).forward(np.ones((64, 64), np.float32), True) for _ in range(200)
        ]
    )  # the process-wide stream
    for t in threads + [noise]:
        t.start()
    for t in threads + [noise]:
        t.join(120)
    assert set(parallel) == set(serial)
    for seed in serial:
        assert same_weights(parallel[seed], serial[seed]), f"seed {seed} differs"


def test_seeds_give_different_runs_and_leave_the_process_stream_alone():
    fastnn.seed(4)
    before = fastnn._random.get_state()
    assert not same_weights(run(1), run(2))
    assert fastnn._random.get_state() == before  # seeded runs drew nothing from it


def test_seeded_model_is_independent_of_the_process_stream():
    fastnn.seed(1)
    a = mlp(seed=9).state_dict()
    fastnn.seed(2)
    b = mlp(seed=9).state_dict()
    assert same_weights(a, b)
    assert not same_weights(a, mlp(seed=10).state_dict())
    model = mlp(seed=9)
    model.reset_parameters(seed=9)
    assert same_weights(a, model.state_dict())


@pytest.mark.parametrize(
    "bad, error", [(-1, ValueError), (1.5, TypeError), (True, TypeError), ("3", TypeError)]
)
def test_bad_seeds_are_refused(bad, error):
    with pytest.raises(error, match="seed"):
        Trainer(mlp(), optim.SGD(lr=0.1), seed=bad)
    with pytest.raises(error, match="seed"):
        nn.Sequential(nn.Linear(2, 2), seed=bad)


def test_resuming_a_seeded_trainer_continues_its_own_stream(tmp_path):
    def trainer(seed):
        return Trainer(mlp(seed=1), optim.SGD(lr=0.1, momentum=0.9), seed=seed)

    whole = trainer(5)
    whole.fit(X, Y, epochs=2, batch_size=32, validation_split=0.2, verbose=0)
    first = trainer(5)
    first.fit(
        X,
        Y,
        epochs=1,
        batch_size=32,
        validation_split=0.2,
        verbose=0,
        checkpoint=tmp_path / "run.ckpt",
    )
    resumed = trainer(99)  # the checkpoint's stream state wins over the new seed
    resumed.fit(
        X, Y, epochs=2, batch_size=32, validation_split=0.2, verbose=0, resume=tmp_path / "run.ckpt"
    )
    assert same_weights(whole.model.state_dict(), resumed.model.state_dict())
