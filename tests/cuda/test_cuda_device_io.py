"""Defects 1 and 2 of issue 11, on the CuPy stand-in: device arrays in predict / evaluate /
fit (no np.asarray on them, no host round trip), and float64 on cuda refused up front."""

import numpy as np
import pytest

import fastnn
from fastnn import nn, optim


def _cnn():
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(48, 4)
    )


def _data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 4, size=n)
    return x, y


def _host_copies_of(fake_cupy, monkeypatch, size):
    """A list that records every device->host copy of an array of `size` elements."""
    seen = []
    get = fake_cupy.ndarray.get

    def recording_get(self, *args, **kwargs):
        if self.size == size:
            seen.append(self.shape)
        return get(self, *args, **kwargs)

    monkeypatch.setattr(fake_cupy.ndarray, "get", recording_get)
    return seen


def test_predict_and_predict_proba_take_device_arrays(fake_cuda, fake_cupy, monkeypatch):
    x, _ = _data()
    fastnn.seed(0)
    model = _cnn().to(fake_cuda)
    expected_labels, expected_proba = model.predict(x), model.predict_proba(x)
    x_dev = fake_cupy.asarray(x)
    copies = _host_copies_of(fake_cupy, monkeypatch, x.size)
    labels = model.predict(x_dev, batch_size=10)
    proba = model.predict_proba(x_dev)
    trainer = fastnn.Trainer(model, optim.SGD(lr=0.1), backend="cuda")
    assert (trainer.predict(x_dev) == expected_labels).all()
    assert isinstance(labels, np.ndarray) and labels.dtype == np.int64
    assert (labels == expected_labels).all()
    np.testing.assert_allclose(proba, expected_proba, rtol=1e-6)
    assert copies == []  # the input never went to the host


def test_device_floats_are_checked_on_the_device(fake_cuda, fake_cupy):
    model = _cnn().to(fake_cuda)
    bad = np.zeros((2, 8, 8), np.float32)
    bad[1, 3, 3] = np.nan
    with pytest.raises(ValueError, match="x holds NaN or infinite values"):
        model.predict(fake_cupy.asarray(bad))
    with pytest.raises(TypeError, match="uint8 images or floating point"):
        model.predict(fake_cupy.asarray(np.zeros((2, 8, 8), np.int32)))


def test_fit_and_evaluate_keep_device_data_on_the_device(fake_cuda, fake_cupy):
    x, y = _data(32)
    results = []
    for on_device in (False, True):
        fastnn.seed(0)
        trainer = fastnn.Trainer(_cnn(), optim.Adam(lr=0.01), backend="cuda")
        data = (fake_cupy.asarray(x), fake_cupy.asarray(y)) if on_device else (x, y)
        with pytest.MonkeyPatch.context() as patch:
            copies = _host_copies_of(fake_cupy, patch, x.size)
            fake_cupy.stats.reset()
            history = trainer.fit(*data, epochs=2, batch_size=8, validation_split=0.25, verbose=0)
            scores = trainer.evaluate(*data)
            results.append((history, scores, trainer.model.state_dict(), fake_cupy.stats.to_device))
        if on_device:
            assert copies == []
    (h_host, s_host, w_host, up_host), (h_dev, s_dev, w_dev, up_dev) = results
    assert h_dev["loss"] == h_host["loss"] and h_dev["val_loss"] == h_host["val_loss"]
    assert s_dev == s_host
    for name in w_host:
        assert (w_dev[name] == w_host[name]).all(), name
    assert up_dev < up_host  # the images were not uploaded again


# ---- defect 2: float64 on cuda, refused where it would enter ------------------------------------


def test_float64_model_on_cuda_is_refused_up_front(fake_cuda, tmp_path):
    with pytest.raises(
        TypeError,
        match=r"backend 'cuda' computes in float32, not float64.*"
        r"\.to\('cuda', dtype='float32'\)",
    ):
        nn.Sequential(nn.Flatten(), nn.Linear(4, 2), dtype=np.float64, backend="cuda")
    model64 = nn.Sequential(nn.Flatten(), nn.Linear(4, 2), dtype=np.float64, backend="numpy")
    with pytest.raises(TypeError, match="computes in float32, not float64"):
        model64.to("cuda")
    path = tmp_path / "model64.npz"
    model64.save(path)
    with pytest.raises((TypeError, ValueError), match="computes in float32, not float64"):
        fastnn.load(path, backend="cuda")
    moved = fastnn.load(path, backend="numpy").to("cuda", dtype=np.float32)
    assert moved.dtype == np.float32 and all(p.dtype == np.float32 for p in moved.parameters())


def test_float32_state_round_trips_on_cuda(fake_cuda, fake_cupy, tmp_path):
    x, y = _data(32)
    fastnn.seed(0)
    model = _cnn()
    trainer = fastnn.Trainer(model, optim.SGD(lr=0.5, momentum=0.9), backend="cuda")
    stopper = fastnn.callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best=True)
    history = trainer.fit(
        x, y, epochs=4, batch_size=8, validation_split=0.25, verbose=0, callbacks=[stopper]
    )
    best = int(np.argmin(history["val_loss"]))
    state = model.state_dict()
    assert all(
        isinstance(p, fake_cupy.ndarray) and p.dtype == np.float32 for p in model.parameters()
    )
    model.load_state_dict(state)
    path = tmp_path / "m.npz"
    model.save(path)
    loaded = fastnn.load(path, backend="cuda")
    assert loaded.dtype == np.float32
    assert (loaded.predict(x) == model.predict(x)).all()
    # restore_best put back the best epoch's weights: evaluating gives its val_loss again
    assert best < len(history["val_loss"])
