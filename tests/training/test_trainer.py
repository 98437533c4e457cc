"""Trainer: learning on an MNIST subset, determinism, interruption, non-finite loss, bad input."""

import os
import signal

import numpy as np
import pytest

import fastnn
from fastnn import callbacks, nn, optim

BACKENDS = ["numpy", "cpu"]


@pytest.fixture(scope="module")
def mnist_subset():
    (x, y), (xt, yt) = fastnn.datasets.mnist()
    # the last test images: the first thousands are the harder half of the test set
    return (x[:5000], y[:5000]), (xt[-2000:], yt[-2000:])


def mlp(hidden=128, dropout=0.0):
    layers = [nn.Flatten(), nn.Linear(784, hidden), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(hidden, 10))


@pytest.mark.parametrize("backend", BACKENDS)
def test_mlp_learns_mnist_subset(backend, mnist_subset):
    (x, y), (xt, yt) = mnist_subset
    fastnn.seed(0)
    model = mlp()
    trainer = fastnn.Trainer(model, optim.SGD(lr=0.05, momentum=0.9), backend=backend)
    history = trainer.fit(x, y, epochs=3, batch_size=64, validation_split=0.1, verbose=0)
    assert len(history["loss"]) == 3 and history["loss"][-1] < history["loss"][0]
    assert len(history["val_accuracy"]) == 3
    assert all(t > 0 for t in history["epoch_time"])
    assert all(s > 0 for s in history["samples_per_s"])
    result = trainer.evaluate(xt, yt)
    assert set(result) == {"loss", "accuracy"}
    assert result["accuracy"] >= 0.90
    np.testing.assert_allclose((model.predict(xt) == yt).mean(), result["accuracy"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_cnn_learns_with_adam_and_cosine(backend, mnist_subset):
    (x, y), (xt, yt) = mnist_subset
    fastnn.seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 5, stride=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8 * 6 * 6, 10),
    )
    trainer = fastnn.Trainer(
        model, optim.Adam(lr=5e-3, schedule=optim.CosineLR(2)), backend=backend
    )
    history = trainer.fit(x[:3000], y[:3000], epochs=2, batch_size=64, verbose=0)
    assert history["lr"][0] < 5e-3 and history["lr"][1] < history["lr"][0]
    assert trainer.evaluate(xt, yt)["accuracy"] >= 0.85


def test_same_seed_gives_bitwise_identical_training(mnist_subset):
    (x, y), _ = mnist_subset

    def run():
        fastnn.seed(42)
        model = mlp(hidden=32, dropout=0.2)
        trainer = fastnn.Trainer(model, optim.SGD(lr=0.05, momentum=0.9, nesterov=True))
        history = trainer.fit(
            x[:1000], y[:1000], epochs=2, batch_size=50, validation_split=0.2, verbose=0
        )
        return model.state_dict(), history

    (w1, h1), (w2, h2) = run(), run()
    for name in w1:
        assert w1[name].tobytes() == w2[name].tobytes(), name
    assert h1["loss"] == h2["loss"] and h1["val_accuracy"] == h2["val_accuracy"]
    fastnn.seed(43)
    assert not np.array_equal(mlp(hidden=32).state_dict()["1.weight"], w1["1.weight"])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    "shuffle,dtype,cnn,split",
    [
        (True, np.float32, False, None),
        (False, np.float32, False, None),
        (True, np.float64, False, 0.2),
        (True, np.float32, True, None),
        (False, np.float32, True, 0.1),
    ],
)
def test_uint8_and_scaled_floats_train_identically(
    mnist_subset, backend, shuffle, dtype, cnn, split
):
    # uint8 images are scaled batch by batch as they are gathered, floats are used as given:
    # the same values, so the same weights bit for bit (a last partial batch of 50 included)
    (x, y), _ = mnist_subset
    weights, histories = [], []
    for data in (x[:450], x[:450].astype(dtype) / 255):
        fastnn.seed(0)
        if cnn:
            model = nn.Sequential(
                nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(576, 10)
            )
        else:
            model = mlp(hidden=16)
        model = model.to(dtype=dtype)
        trainer = fastnn.Trainer(model, optim.SGD(lr=0.1, momentum=0.9), backend=backend)
        history = trainer.fit(
            data,
            y[:450],
            epochs=2,
            batch_size=100,
            shuffle=shuffle,
            verbose=0,
            validation_split=split,
        )
        weights.append(model.state_dict())
        histories.append(history)
    for name in weights[0]:
        assert weights[0][name].dtype == dtype
        np.testing.assert_array_equal(weights[0][name], weights[1][name])
    assert histories[0]["loss"] == histories[1]["loss"]


class StopAfter(callbacks.Callback):
    def __init__(self, steps, action):
        self.steps, self.action, self.count = steps, action, 0

    def on_batch_end(self, trainer, epoch, step, loss):
        self.count += 1
        if self.count == self.steps:
            self.action()


def test_keyboard_interrupt_from_callback_keeps_model_and_history(mnist_subset):
    (x, y), _ = mnist_subset
    fastnn.seed(0)
    model = mlp(hidden=16)
    trainer = fastnn.Trainer(model, optim.SGD(lr=0.05, momentum=0.9))
    before = model.state_dict()

    def interrupt():
        raise KeyboardInterrupt

    # 1000 samples, batch 100: 10 steps per epoch; stop at step 5 of epoch 2
    history = trainer.fit(
        x[:1000],
        y[:1000],
        epochs=3,
        batch_size=100,
        callbacks=[StopAfter(15, interrupt)],
        verbose=0,
    )
    assert history.interrupted and history.stopped_at == {"epoch": 2, "step": 5}
    assert len(history["loss"]) == 1 and trainer.history is history
    after = model.state_dict()
    assert all(np.isfinite(a).all() for a in after.values())
    assert any(not np.array_equal(before[k], after[k]) for k in before)
    assert trainer.optimizer.steps == 15
    # training can go on from there
    history2 = trainer.fit(x[:1000], y[:1000], epochs=1, batch_size=100, verbose=0)
    assert not history2.interrupted and trainer.optimizer.steps == 25


def test_sigint_stops_after_the_current_step(mnist_subset):
    (x, y), _ = mnist_subset
    # fit takes over Ctrl-C only from Python's default handler; with CuPy installed an earlier
    # import in the session replaces it, so start this test from the default
    signal.signal(signal.SIGINT, signal.default_int_handler)
    fastnn.seed(0)
    model = mlp(hidden=16)
    trainer = fastnn.Trainer(model, optim.SGD(lr=0.05))
    sigint = StopAfter(3, lambda: os.kill(os.getpid(), signal.SIGINT))
    history = trainer.fit(
        x[:1000], y[:1000], epochs=2, batch_size=100, callbacks=[sigint], verbose=0
    )
    assert history.interrupted and history.stopped_at == {"epoch": 1, "step": 3}
    assert trainer.optimizer.steps == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_stop_training_from_epoch_end():
    class StopAtEpoch(callbacks.Callback):
        def on_epoch_end(self, trainer, epoch, logs):
            if epoch == 1:
                trainer.stop_training = True

    x = np.random.default_rng(0).random((64, 4)).astype(np.float32)
    y = (x[:, 0] > 0.5).astype(np.int64)
    fastnn.seed(0)
    trainer = fastnn.Trainer(nn.Sequential(nn.Linear(4, 2)), optim.SGD(lr=0.1))
    history = trainer.fit(x, y, epochs=5, batch_size=16, callbacks=StopAtEpoch(), verbose=0)
    assert history.epochs == 2 and not history.interrupted


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_non_finite_loss_names_epoch_and_step():
    rng = np.random.default_rng(0)
    x = rng.random((64, 4)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    fastnn.seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    trainer = fastnn.Trainer(model, optim.SGD(lr=0.1))

    class Poison(callbacks.Callback):
        def on_batch_end(self, trainer, epoch, step, loss):
            if epoch == 1 and step == 2:
                trainer.model.layers[0].weight[0, 0] = np.inf

    with pytest.raises(fastnn.NonFiniteLossError, match=r"epoch 2, step 4"):
        trainer.fit(x, y, epochs=3, batch_size=16, callbacks=Poison(), verbose=0)
    assert trainer.history.stopped_at == {"epoch": 2, "step": 3}
    assert trainer.history.epochs == 1


@pytest.fixture
def small_setup():
    fastnn.seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = optim.SGD(lr=0.1, momentum=0.9)
    trainer = fastnn.Trainer(model, opt)
    x = np.random.default_rng(0).integers(0, 256, (20, 4, 4), dtype=np.uint8)
    y = np.arange(20) % 3
    return trainer, x, y


@pytest.mark.parametrize(
    "change, error, match",
    [
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(batch_size=2.5), TypeError, "batch_size"),
        (dict(epochs=0), ValueError, "epochs"),
        (dict(y=np.arange(19) % 3), ValueError, "match x"),
        (dict(y=np.arange(20)), ValueError, "outside"),
        (dict(y=-(np.arange(20) % 3)), ValueError, "outside"),
        (dict(y=np.zeros(20)), TypeError, "integer"),
        (dict(x=np.zeros((20, 5, 5), np.uint8)), ValueError, "shape"),
        (dict(x=np.zeros((20, 16), np.int32)), TypeError, "uint8"),
        (dict(x=np.full((20, 16), np.nan, np.float32)), ValueError, "NaN"),
        (dict(validation_split=1.0), ValueError, "validation_split"),
        (dict(validation_split=0.01), ValueError, "validation_split"),
        (
            dict(validation_split=0.2, validation_data=(np.zeros((2, 16)), np.zeros(2, int))),
            ValueError,
            "not both",
        ),
        (
            dict(validation_data=(np.zeros((2, 17), np.float32), np.zeros(2, int))),
            ValueError,
            "shape",
        ),
        (dict(callbacks=[object()]), TypeError, "callback"),
    ],
)
def test_bad_arguments_fail_before_any_work(small_setup, change, error, match):
    trainer, x, y = small_setup
    before = trainer.model.state_dict()
    kwargs = dict(x=x, y=y, epochs=1, batch_size=4, verbose=0)
    kwargs.update(change)
    with pytest.raises(error, match=match):
        trainer.fit(**kwargs)
    assert trainer.optimizer.steps == 0 and trainer.history is None
    for name, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


@pytest.mark.parametrize(
    "make, error",
    [
        (lambda: optim.SGD(lr=0), ValueError),
        (lambda: optim.SGD(lr=-0.1), ValueError),
        (lambda: optim.SGD(lr=float("nan")), ValueError),
        (lambda: optim.SGD(lr=0.1, momentum=1.0), ValueError),
        (lambda: optim.SGD(lr=0.1, nesterov=True), ValueError),
        (lambda: optim.Adam(lr=0.0), ValueError),
        (lambda: optim.Adam(betas=(0.9, 1.0)), ValueError),
        (lambda: optim.SGD(lr="0.1"), TypeError),
        (lambda: fastnn.Trainer(nn.Sequential(nn.Flatten()), optim.SGD(lr=0.1)), ValueError),
        (
            lambda: fastnn.Trainer(nn.Sequential(nn.Linear(2, 2)), optim.SGD(lr=0.1), loss="hinge"),
            ValueError,
        ),
        (lambda: fastnn.Trainer(nn.Sequential(nn.Linear(2, 2)), "sgd"), TypeError),
        (
            lambda: fastnn.Trainer(
                nn.Sequential(nn.Linear(2, 2)), optim.SGD(lr=0.1), backend="tpu"
            ),
            ValueError,
        ),
    ],
)
def test_bad_constructor_arguments(make, error):
    with pytest.raises(error):
        make()


def test_mse_loss_trains_and_evaluates():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    fastnn.seed(0)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2), nn.Sigmoid())
    trainer = fastnn.Trainer(model, optim.SGD(lr=0.5, momentum=0.9), loss="mse")
    history = trainer.fit(x, y, epochs=20, batch_size=20, verbose=0)
    assert history["loss"][-1] < history["loss"][0]
    assert trainer.evaluate(x, y)["accuracy"] > 0.9


def test_early_stopping_restores_best_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3)).astype(np.float32)
    y = rng.integers(0, 2, 100)  # noise: validation loss soon stops improving
    fastnn.seed(0)
    model = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 2))
    trainer = fastnn.Trainer(model, optim.SGD(lr=0.5, momentum=0.9))
    stop = callbacks.EarlyStopping(patience=1)
    history = trainer.fit(
        x, y, epochs=50, batch_size=10, validation_split=0.3, callbacks=[stop], verbose=0
    )
    assert history.epochs < 50
    best = int(np.argmin(history["val_loss"]))
    assert stop.best_epoch == best


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_fit_with_reused_buffers_equals_a_plain_loop(backend, loss):
    """fit() writes outputs and gradients into arrays kept between steps; a hand-written loop
    with fresh arrays everywhere must end with bitwise the same weights."""
    from fastnn import losses

    def build():
        fastnn.seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 3, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.ReLU(),
            nn.Conv2d(3, 4, 2),
            nn.Tanh(),
            nn.Flatten(),
            nn.Dropout(0.1),
            nn.Linear(16, 12),
            nn.ReLU(),
            nn.Linear(12, 8),
            nn.Sigmoid(),
            nn.Linear(8, 5),
            backend=backend,
        )

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 5, 50)
    model = build()
    fastnn.Trainer(model, optim.SGD(lr=0.1, momentum=0.9), loss=loss, backend=backend).fit(
        x, y, epochs=2, batch_size=16, shuffle=False, verbose=0
    )
    assert not any(step._buffers for step in model.plan.steps)  # freed after fit

    plain = build()
    opt = optim.SGD(lr=0.1, momentum=0.9).attach(plain)
    loss_fn = losses.get(loss)
    xs = plain.prepare_input(x)
    for _ in range(2):
        for lo in range(0, 50, 16):
            out = plain.forward(xs[lo : lo + 16], True)
            _, dout = loss_fn(plain.backend, out, y[lo : lo + 16].astype(np.int64))
            plain.backward(dout)
            opt.step()
    for (name, a), b in zip(model.state_dict().items(), plain.state_dict().values()):
        assert a.tobytes() == b.tobytes(), name

    stepped = build()
    trainer = fastnn.Trainer(stepped, optim.SGD(lr=0.1, momentum=0.9), loss=loss, backend=backend)
    labels = y.astype(np.int64)
    for _ in range(2):
        for lo in range(0, 50, 16):
            trainer.train_step(xs[lo : lo + 16], labels[lo : lo + 16])
    for (name, a), b in zip(stepped.state_dict().items(), plain.state_dict().values()):
        assert a.tobytes() == b.tobytes(), name


class _ProxyXP:
    """numpy under another name: makes the trainer take its device-backend path (no per-step
    host sync; loss fetched every DEVICE_CHECK_INTERVAL steps) while computing the same."""

    def __getattr__(self, name):
        return getattr(np, name)


def device_like_backend():
    from fastnn.backends.numpy import NumpyBackend

    class DeviceLike(NumpyBackend):
        name = "device-like"
        xp = _ProxyXP()
        synced = 0

        def synchronize(self):
            DeviceLike.synced += 1

    return DeviceLike()


def test_device_path_matches_host_path(mnist_subset):
    (x, y), _ = mnist_subset
    results = []
    for backend in ("numpy", device_like_backend()):
        fastnn.seed(0)
        model = mlp(hidden=16)
        trainer = fastnn.Trainer(model, optim.SGD(lr=0.05, momentum=0.9), backend=backend)
        history = trainer.fit(
            x[:600], y[:600], epochs=2, batch_size=50, validation_split=0.1, verbose=0
        )
        results.append((model.state_dict(), history))
    (w1, h1), (w2, h2) = results
    for name in w1:
        assert w1[name].tobytes() == w2[name].tobytes(), name
    np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-6)
    assert h1["accuracy"] == h2["accuracy"] and h1["val_accuracy"] == h2["val_accuracy"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_device_path_reports_non_finite_loss_within_a_step_range():
    from fastnn import trainer as trainer_module

    x = np.random.default_rng(0).random((400, 4)).astype(np.float32)
    y = np.arange(400) % 3
    fastnn.seed(0)
    trainer = fastnn.Trainer(
        nn.Sequential(nn.Linear(4, 3)), optim.SGD(lr=0.1), backend=device_like_backend()
    )

    class Poison(callbacks.Callback):
        def on_batch_end(self, trainer, epoch, step, loss):
            if step == 60:
                trainer.model.layers[0].weight[:] = np.nan

    assert trainer_module.DEVICE_CHECK_INTERVAL == 50
    with pytest.raises(fastnn.NonFiniteLossError, match=r"epoch 1, at a step from 51 to 100"):
        trainer.fit(x, y, epochs=1, batch_size=4, callbacks=Poison(), verbose=0)


def test_verbose_prints_one_line_per_epoch_and_progress_bar_runs(capsys):
    x = np.random.default_rng(0).random((64, 4)).astype(np.float32)
    y = np.arange(64) % 2
    fastnn.seed(0)
    trainer = fastnn.Trainer(nn.Sequential(nn.Linear(4, 2)), optim.SGD(lr=0.1))
    trainer.fit(x, y, epochs=2, batch_size=16, validation_data=(x, y), verbose=1, progress=False)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2  loss ")
    assert "val_acc" in lines[1] and "samples/s" in lines[1]
    history = trainer.fit(x, y, epochs=1, batch_size=16, verbose=1, progress=True)
    assert history.epochs == 1
    assert "epoch 1/1" in capsys.readouterr().err
