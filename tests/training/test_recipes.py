"""Training recipes: OneCycleLR, AdamW, gradient clipping, label smoothing in the loss, and
augmentation in the batch gather (RandomAffine): values against their definitions, bad
arguments, and bitwise reproducible seeded runs."""

import numpy as np
import pytest

import fastnn
from fastnn import backends, nn, optim
from fastnn.augment import RandomAffine

BACKEND = "cpu" if backends.available()["cpu"] else "numpy"


def test_one_cycle_matches_pytorch_shape():
    s = optim.OneCycleLR(10, pct_start=0.3, div_factor=25, final_div_factor=1e4)
    assert s(0) == pytest.approx(1 / 25)
    assert s(3) == pytest.approx(1.0)
    assert s(1.5) == pytest.approx(1 / 25 + (1 - 1 / 25) * 0.5)
    assert s(10) == pytest.approx(1 / 25 / 1e4)
    assert s(20) == pytest.approx(1 / 25 / 1e4)
    values = [s(e / 10) for e in range(101)]
    peak = int(np.argmax(values))
    assert peak == 30 and all(np.diff(values[:31]) > 0) and all(np.diff(values[30:]) < 0)
    with pytest.raises(ValueError, match="pct_start"):
        optim.OneCycleLR(5, pct_start=1.0)
    with pytest.raises(ValueError, match="epochs"):
        optim.OneCycleLR(0)


def tiny_model():
    fastnn.seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3), backend=BACKEND)


def test_adamw_decays_decoupled_from_the_gradient():
    model = tiny_model()
    opt = optim.AdamW(lr=0.1, weight_decay=0.5)
    opt.attach(model)
    before = [np.array(p) for p in model.parameters()]
    for layer in model.layers:
        layer.grads = [np.zeros_like(p) for p in layer.params]
    opt.step()  # a zero gradient: Adam moves nothing, the decay alone shrinks by lr * wd
    for b, p in zip(before, model.parameters()):
        np.testing.assert_allclose(p, b * (1 - 0.1 * 0.5), rtol=1e-6)
    adam = optim.Adam(lr=0.1, weight_decay=0.5)
    adam_model = tiny_model()
    adam.attach(adam_model)
    for layer in adam_model.layers:
        layer.grads = [np.zeros_like(p) for p in layer.params]
    adam.step()  # L2 in the gradient: Adam normalizes it to a step of ~lr per weight
    w0, w1 = before[0], adam_model.parameters()[0]
    np.testing.assert_allclose(np.abs(w0 - w1), 0.1, rtol=1e-3)


def test_clip_norm_scales_gradients_to_the_global_norm():
    model = tiny_model()
    opt = optim.SGD(lr=1.0, clip_norm=2.0)
    opt.attach(model)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        layer.grads = [rng.standard_normal(p.shape).astype(p.dtype) * 10 for p in layer.params]
    grads_before = [g.copy() for g in model.gradients()]
    params_before = [p.copy() for p in model.parameters()]
    norm = optim.global_norm(grads_before)
    assert norm > 2.0
    opt.step()
    assert optim.global_norm(model.gradients()) == pytest.approx(2.0, rel=1e-5)
    for p0, g0, p in zip(params_before, grads_before, model.parameters()):
        np.testing.assert_allclose(p, p0 - g0 * (2.0 / norm), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="clip_norm"):
        optim.Adam(clip_norm=0)


@pytest.mark.parametrize("cls", [optim.SGD, optim.Adam, optim.AdamW])
def test_clip_norm_is_part_of_the_config(cls):
    """config() (the repr, and the optimizer identity a checkpoint is resumed against) records
    clip_norm where it is set; SGD's used to drop it."""
    assert cls(clip_norm=2.0).config()["clip_norm"] == 2.0
    assert "clip_norm=2.0" in repr(cls(clip_norm=2.0))
    assert "clip_norm" not in cls().config()


def test_label_smoothing_loss_in_training():
    (x, y), _ = fastnn.datasets.mnist()
    with pytest.raises(ValueError, match="label_smoothing"):
        nn.CrossEntropy(label_smoothing=1.0)
    losses = []
    for smoothing in (0.0, 0.2):
        model = tiny_model()
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), backend=BACKEND)
        trainer = fastnn.Trainer(
            model,
            optim.SGD(lr=0.1),
            loss=nn.CrossEntropy(label_smoothing=smoothing),
            backend=BACKEND,
        )
        history = trainer.fit(x[:500], y[:500], epochs=2, batch_size=50, verbose=0)
        losses.append(history["loss"][-1])
    assert losses[1] > losses[0]  # a smoothed target cannot be fitted to zero loss


def test_random_affine_matrices_and_arguments():
    rng = np.random.default_rng(0)
    m = RandomAffine().matrices(3, 28, 28, rng)
    np.testing.assert_allclose(m, np.tile([1.0, 0, 0, 0, 1, 0], (3, 1)), atol=1e-12)
    m = RandomAffine(rotate=90).matrices(500, 9, 9, rng)
    assert np.abs(m[:, 1]).max() > 0.9  # rotations near 90 degrees occur
    center = np.array([4.0, 4.0, 1.0])
    np.testing.assert_allclose(m[:, :3] @ center, 4.0)  # the centre maps to itself
    with pytest.raises(ValueError, match="shift"):
        RandomAffine(shift=0.7)
    with pytest.raises(TypeError, match="rotate"):
        RandomAffine(rotate="10")
    with pytest.raises(TypeError, match="augment"):
        fastnn.Trainer(tiny_model(), optim.SGD()).fit(
            np.zeros((4, 6)), np.zeros(4, int), augment="flip"
        )


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 4, 5),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(576, 16),
        nn.BatchNorm1d(16),
        nn.ReLU(),
        nn.Linear(16, 10),
        backend=BACKEND,
    )


def fit_once(augment, threads=None, epochs=1):
    (x, y), _ = fastnn.datasets.mnist()
    if threads is not None:
        fastnn.set_num_threads(threads)
    fastnn.seed(3)
    model = cnn()
    trainer = fastnn.Trainer(model, optim.SGD(lr=0.05, momentum=0.9), backend=BACKEND)
    trainer.fit(x[:512], y[:512], epochs=epochs, batch_size=64, verbose=0, augment=augment)
    return model.state_dict()


def test_augmented_fit_is_bitwise_reproducible_at_any_thread_count():
    before = fastnn.get_num_threads()
    try:
        runs = [
            fit_once(RandomAffine(shift=0.1, rotate=15, scale=0.1), threads)
            for threads in (1, 2, 1)
        ]
    finally:
        fastnn.set_num_threads(before)
    for key in runs[0]:
        assert runs[0][key].tobytes() == runs[1][key].tobytes() == runs[2][key].tobytes()
    plain = fit_once(None)
    assert any(not np.array_equal(plain[k], runs[0][k]) for k in plain)
    # the identity "augmentation" is the plain gather: the same weights after one epoch
    identity = fit_once(RandomAffine())
    for key in plain:
        np.testing.assert_array_equal(identity[key], plain[key])


def test_augment_needs_images():
    (x, y), _ = fastnn.datasets.mnist()
    trainer = fastnn.Trainer(
        nn.Sequential(nn.Flatten(), nn.Linear(784, 10), backend=BACKEND),
        optim.SGD(),
        backend=BACKEND,
    )
    with pytest.raises(ValueError, match="augment transforms images"):
        trainer.fit(x[:10], y[:10], augment=RandomAffine(shift=0.1), verbose=0)
