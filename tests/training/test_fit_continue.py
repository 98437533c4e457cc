"""fit called twice: weights and optimizer state continue, history and schedule restart;
initial_epoch continues the schedule instead (Keras semantics)."""

import numpy as np
import pytest

import fastnn
from fastnn import nn, optim


def data():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (96, 6, 6), dtype=np.uint8), rng.integers(0, 3, 96)


def trainer(backend="cpu"):
    fastnn.seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = optim.SGD(lr=0.1, momentum=0.9, schedule=optim.CosineLR(6))
    return fastnn.Trainer(model, opt, backend=backend)


@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_initial_epoch_continues_the_schedule_as_one_run(backend, capsys):
    x, y = data()
    whole = trainer(backend)
    one = whole.fit(x, y, epochs=6, batch_size=32)
    capsys.readouterr()

    split = trainer(backend)
    first = split.fit(x, y, epochs=3, batch_size=32, verbose=0)
    second = split.fit(x, y, epochs=6, batch_size=32, initial_epoch=3)
    assert first.epochs == 3 and second.epochs == 3
    assert first["lr"] + second["lr"] == one["lr"]
    assert first["loss"] + second["loss"] == one["loss"]
    # the same weights, bit for bit: the shuffling stream and the optimizer state carried over
    for (name, a), b in zip(whole.model.state_dict().items(), split.model.state_dict().values()):
        assert a.tobytes() == b.tobytes(), name
    printed = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert printed == ["4/6", "5/6", "6/6"]


def test_fit_twice_restarts_history_and_schedule_but_keeps_weights():
    x, y = data()
    t = trainer()
    first = t.fit(x, y, epochs=3, batch_size=32, verbose=0)
    after_first = t.model.state_dict()
    second = t.fit(x, y, epochs=3, batch_size=32, verbose=0)
    assert second.epochs == 3 and t.history is second
    assert second["lr"] == first["lr"]  # the cosine starts over
    assert second["loss"][0] < first["loss"][0]  # from the trained weights, not from scratch
    assert any(
        a.tobytes() != b.tobytes()
        for a, b in zip(after_first.values(), t.model.state_dict().values())
    )


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(epochs=3, initial_epoch=3), ValueError),
        (dict(epochs=3, initial_epoch=-1), ValueError),
        (dict(epochs=3, initial_epoch=1.0), TypeError),
        (dict(epochs=3, initial_epoch=True), TypeError),
        (dict(epochs=3, initial_epoch=1, checkpoint="c.npz"), ValueError),
    ],
)
def test_bad_initial_epoch(kwargs, error, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = data()
    with pytest.raises(error, match="initial_epoch"):
        trainer().fit(x, y, verbose=0, **kwargs)
    assert not (tmp_path / "c.npz").exists()
