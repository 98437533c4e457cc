"""What a user does with backend="cuda", run in CI on the CuPy stand-in (no GPU): fit of an MLP
and a CNN (Adam and SGD, schedules, Dropout, Sigmoid/Tanh, MSE), evaluate, predict and
predict_proba with host and device arrays, checkpoint and resume, save and load,
model.to("cuda") and back, fastnn.profile and train_step. Tiny shapes: the kernels run on the
host. Where no random draw differs, the numbers must be the numpy backend's."""

import io

import numpy as np
import pytest

import fastnn
from fastnn import nn, optim


def _data(n=48, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
    y = (x.reshape(n, -1).mean(axis=1) > 127).astype(np.int64) + (x[:, 0, 0] > 127)
    return x, y


MODELS = {
    "mlp-sigmoid-tanh": lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.Sigmoid(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)
    ),
    "cnn": lambda: nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16, 3),
    ),
}
OPTIMIZERS = {
    "adam-cosine": lambda: optim.Adam(lr=0.01, schedule=optim.CosineLR(3, warmup=0.5)),
    "sgd-nesterov-step": lambda: optim.SGD(
        lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4, schedule=optim.StepLR(1, 0.5)
    ),
}


def _fit(backend, make_model, make_optimizer, loss="cross_entropy", epochs=2, **kwargs):
    x, y = _data()
    fastnn.seed(0)
    model = make_model()
    trainer = fastnn.Trainer(model, make_optimizer(), loss=loss, backend=backend)
    history = trainer.fit(
        x, y, epochs=epochs, batch_size=16, validation_split=0.25, verbose=0, **kwargs
    )
    return trainer, history


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("model", MODELS)
def test_fit_evaluate_predict_match_the_numpy_backend(fake_cuda, fake_cupy, model, optimizer):
    runs = {}
    for backend in ("numpy", "cuda"):
        trainer, history = _fit(backend, MODELS[model], OPTIMIZERS[optimizer])
        x, y = _data(20, seed=1)
        runs[backend] = (
            history,
            trainer.evaluate(x, y),
            trainer.predict(x),
            trainer.model.predict_proba(x),
            trainer.model.state_dict(),
        )
    (h_ref, e_ref, p_ref, pp_ref, w_ref), (h, e, p, pp, w) = runs["numpy"], runs["cuda"]
    for key in ("loss", "val_loss", "lr"):
        np.testing.assert_allclose(h[key], h_ref[key], rtol=1e-4, err_msg=key)
    assert h["accuracy"] == h_ref["accuracy"] and h["val_accuracy"] == h_ref["val_accuracy"]
    assert np.isclose(e["loss"], e_ref["loss"], rtol=1e-4) and e["accuracy"] == e_ref["accuracy"]
    assert (p == p_ref).all()
    np.testing.assert_allclose(pp, pp_ref, rtol=1e-4, atol=1e-6)
    for name in w_ref:
        np.testing.assert_allclose(w[name], w_ref[name], rtol=1e-3, atol=1e-5, err_msg=name)


def test_mse_and_dropout_train_on_cuda(fake_cuda, fake_cupy):
    def make():
        return nn.Sequential(
            nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.25), nn.Linear(16, 3)
        )

    _, h_ref = _fit("numpy", make, lambda: optim.SGD(lr=0.1), loss="mse", epochs=3)
    trainer, history = _fit("cuda", make, lambda: optim.SGD(lr=0.1), loss="mse", epochs=3)
    assert fake_cupy.stats.kernels["curand.random"] > 0  # masks drawn on the device
    assert np.isfinite(history["loss"]).all() and history["loss"][-1] < history["loss"][0]
    # the masks come from another stream than numpy's: close, not equal
    assert abs(history["val_loss"][-1] - h_ref["val_loss"][-1]) < 0.1


def test_host_and_device_inputs_give_the_same_answers(fake_cuda, fake_cupy):
    trainer, _ = _fit("cuda", MODELS["cnn"], OPTIMIZERS["adam-cosine"], epochs=1)
    x, y = _data(20, seed=2)
    xd, yd = fake_cupy.asarray(x), fake_cupy.asarray(y)
    model = trainer.model
    assert (model.predict(xd) == model.predict(x)).all()
    np.testing.assert_array_equal(model.predict_proba(xd), model.predict_proba(x))
    assert trainer.evaluate(xd, yd) == trainer.evaluate(x, y)
    assert (trainer.predict(xd) == trainer.predict(x)).all()


def test_checkpoint_and_resume_end_as_the_uninterrupted_run(fake_cuda, fake_cupy, tmp_path):
    path = tmp_path / "run.ckpt"
    _, full = _fit("cuda", MODELS["cnn"], OPTIMIZERS["sgd-nesterov-step"], epochs=3)
    first, _ = _fit(
        "cuda", MODELS["cnn"], OPTIMIZERS["sgd-nesterov-step"], epochs=2, checkpoint=path
    )
    resumed, history = _fit(
        "cuda", MODELS["cnn"], OPTIMIZERS["sgd-nesterov-step"], epochs=3, resume=path
    )
    assert history["loss"] == full["loss"] and history["val_loss"] == full["val_loss"]


def test_models_move_to_cuda_and_back(fake_cuda, fake_cupy, tmp_path):
    x, _ = _data(12)
    fastnn.seed(0)
    model = MODELS["cnn"]().to("numpy")
    expected = model.predict_proba(x)
    model.to("cuda")
    assert all(isinstance(p, fake_cupy.ndarray) for p in model.parameters())
    np.testing.assert_allclose(model.predict_proba(x), expected, rtol=1e-5, atol=1e-7)
    model.save(tmp_path / "cnn.npz")
    model.to("numpy")
    assert all(isinstance(p, np.ndarray) for p in model.parameters())
    np.testing.assert_allclose(model.predict_proba(x), expected, rtol=1e-6)
    loaded = fastnn.load(tmp_path / "cnn.npz", backend="cuda")
    np.testing.assert_allclose(loaded.predict_proba(x), expected, rtol=1e-5, atol=1e-7)


def test_profile_and_train_step_on_cuda(fake_cuda, fake_cupy):
    x, y = _data(32)
    fastnn.seed(0)
    model = MODELS["cnn"]()
    table = io.StringIO()
    result = fastnn.profile(
        model, x, y, backend="cuda", batch_size=8, steps=2, warmup=1, file=table
    )
    assert "Conv2d" in table.getvalue() and result is not None
    trainer = fastnn.Trainer(model, optim.Adam(lr=0.01), backend="cuda")
    xs, ys = model.prepare_input(x[:8]), fake_cupy.asarray(y[:8])
    fake_cupy.stats.reset()
    losses = [trainer.train_step(xs, ys) for _ in range(4)]
    assert fake_cupy.stats.syncs == 0  # a step never waits for the device
    assert all(isinstance(v, fake_cupy.ndarray) and v.ndim == 0 for v in losses)
    assert float(losses[-1]) < float(losses[0])
