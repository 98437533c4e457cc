"""EarlyStopping: Keras semantics (stop `patience` epochs after the best), one printed line
when it stops and one when it restores the best weights."""

import numpy as np
import pytest

import fastnn
from fastnn import callbacks, nn, optim


def scripted_fit(val_losses, epochs, **stop_kwargs):
    """fit() on tiny data where the monitored val_loss follows `val_losses` (a callback placed
    before EarlyStopping overwrites the measured value); returns (history, stopper, weights
    after each epoch)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = rng.integers(0, 2, 40)
    fastnn.seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    trainer = fastnn.Trainer(model, optim.SGD(lr=0.1, momentum=0.9))
    weights = []

    def script(trainer, epoch, logs):
        logs["val_loss"] = val_losses[epoch]
        weights.append(trainer.model.state_dict())

    stop = callbacks.EarlyStopping(**stop_kwargs)
    history = trainer.fit(
        x,
        y,
        epochs=epochs,
        batch_size=10,
        validation_split=0.25,
        callbacks=[callbacks.LambdaCallback(on_epoch_end=script), stop],
        verbose=0,
    )
    return trainer, history, stop, weights


@pytest.mark.parametrize("patience", [0, 1, 2, 3])
def test_stops_patience_epochs_after_the_best(patience, capsys):
    # best at the 4th epoch (index 3); nothing better afterwards
    losses = [5.0, 4.0, 3.0, 2.5, 2.6, 2.7, 2.8, 2.9, 3.0, 3.1]
    trainer, history, stop, weights = scripted_fit(losses, epochs=10, patience=patience)
    waited = max(patience, 1)  # patience=0: stop at the first epoch without improvement
    assert history.epochs == 4 + waited
    assert stop.best_epoch == 3 and stop.best == 2.5
    assert stop.stopped_epoch == 3 + waited
    assert history.stopped_at == {"epoch": 4 + waited, "step": 3}
    # the weights are those after the best epoch, not after the last one
    final = trainer.model.state_dict()
    for name, value in weights[3].items():
        assert value.tobytes() == final[name].tobytes(), name
    assert any(weights[-1][n].tobytes() != final[n].tobytes() for n in final)
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"early stop after epoch {4 + waited}: val_loss has not improved for {waited} "
        f"epoch{'s' if waited != 1 else ''} (best 2.5000 at epoch 4)",
        "restored the weights of epoch 4 (val_loss 2.5000)",
    ]


def test_min_delta_counts_small_improvements_as_none(capsys):
    losses = [1.0, 0.99, 0.98, 0.97, 0.5, 0.4]
    _, history, stop, _ = scripted_fit(losses, epochs=6, patience=2, min_delta=0.05)
    assert history.epochs == 3 and stop.best_epoch == 0


def test_improving_run_never_stops_and_keeps_its_weights(capsys):
    losses = [5.0, 4.0, 3.0, 2.0]
    trainer, history, stop, weights = scripted_fit(losses, epochs=4, patience=1)
    assert history.epochs == 4 and stop.stopped_epoch is None and history.stopped_at is None
    assert capsys.readouterr().out == ""


def test_verbose_false_prints_nothing(capsys):
    losses = [1.0, 2.0, 3.0, 4.0]
    _, history, stop, _ = scripted_fit(losses, epochs=4, patience=1, verbose=False)
    assert history.epochs == 2 and stop.stopped_epoch == 1
    assert capsys.readouterr().out == ""


def test_accuracy_is_maximised():
    stop = callbacks.EarlyStopping(
        monitor="val_accuracy", patience=1, restore_best=False, verbose=False
    )

    class FakeTrainer:
        stop_training = False

    trainer = FakeTrainer()
    stop.on_train_begin(trainer)
    for epoch, acc in enumerate([0.5, 0.7, 0.6]):
        stop.on_epoch_end(trainer, epoch, {"val_accuracy": acc})
    assert trainer.stop_training and stop.best == 0.7 and stop.best_epoch == 1


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(patience=-1),
        dict(patience=1.5),
        dict(patience=True),
        dict(min_delta=-0.1),
        dict(min_delta=float("nan")),
        dict(monitor="val_acc"),
    ],
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        callbacks.EarlyStopping(**kwargs)
