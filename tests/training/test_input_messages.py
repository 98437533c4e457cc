"""Messages for the usual input mistakes say the fix: one image without a batch axis, one-hot
labels, float labels, NaN in the data (which sample and where), float images in 0-255."""

import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import nn, optim
from fastnn.datasets import UnscaledPixelsWarning, nonfinite_message, to_float


def mlp():
    fastnn.seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))


def cnn():
    fastnn.seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 2, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * 12 * 12, 10)
    )


def images(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)


@pytest.mark.parametrize("make", [mlp, cnn])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
@pytest.mark.parametrize("method", ["predict", "predict_proba"])
def test_one_image_without_batch_axis_suggests_adding_one(make, dtype, method):
    x, _ = images()
    model = make()
    one = x[0].astype(dtype)
    with pytest.raises(
        ValueError, match=re.escape("add a batch axis, e.g. x[None] or x.reshape(1, 28, 28)")
    ):
        getattr(model, method)(one)
    # and the suggestion works
    assert getattr(model, method)(one[None]).shape[0] == 1


def test_one_flat_sample_suggests_adding_a_batch_axis():
    model = mlp()
    with pytest.raises(ValueError, match=re.escape("x.reshape(1, 784)")):
        model.predict(np.zeros(784, np.float32))


def test_wrong_shape_that_is_no_sample_gets_no_batch_hint():
    with pytest.raises(ValueError) as info:
        mlp().predict(np.zeros((5, 27, 27), np.float32))
    assert "batch axis" not in str(info.value)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.uint8, bool])
def test_one_hot_labels_suggest_argmax(dtype):
    x, y = images()
    one_hot = np.eye(10, dtype=dtype)[y]
    trainer = fastnn.Trainer(mlp(), optim.SGD(lr=0.1))
    for call in (lambda: trainer.fit(x, one_hot, verbose=0), lambda: trainer.evaluate(x, one_hot)):
        with pytest.raises(
            ValueError,
            match=re.escape(
                "one-hot encoded (shape (64, 10)); "
                "pass class indices of shape (64,) "
                "instead: y.argmax(axis=1)"
            ),
        ):
            call()
    assert trainer.fit(x, one_hot.argmax(axis=1), verbose=0).epochs == 1


def test_float_labels_with_whole_values_suggest_astype():
    x, y = images()
    trainer = fastnn.Trainer(mlp(), optim.SGD(lr=0.1))
    with pytest.raises(TypeError, match=re.escape("pass y.astype(np.int64)")):
        trainer.fit(x, y.astype(np.float32), verbose=0)
    with pytest.raises(TypeError) as info:
        trainer.fit(x, y + 0.5, verbose=0)
    assert "astype" not in str(info.value)


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(1, 5), min_size=2, max_size=4),
    data=st.data(),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
)
def test_nonfinite_message_names_the_first_bad_value(shape, data, value):
    x = np.zeros(shape, np.float32)
    flat = data.draw(st.lists(st.integers(0, x.size - 1), min_size=1, max_size=4, unique=True))
    x.reshape(-1)[flat] = value
    first = np.unravel_index(min(flat), x.shape)
    samples = len({np.unravel_index(i, x.shape)[0] for i in flat})
    with pytest.raises(ValueError) as info:
        to_float(x)
    message = str(info.value)
    assert message == nonfinite_message(x)
    assert f"x[{', '.join(map(str, first))}] is {float(value)} (sample {first[0]})" in message
    assert f"{len(flat)} such value{'s' if len(flat) > 1 else ''} in {samples} sample" in message


def test_nan_in_fit_evaluate_and_predict_says_where():
    x, y = images()
    xf = x.astype(np.float32) / 255
    xf[37, 5, 6] = np.nan
    model = mlp()
    trainer = fastnn.Trainer(model, optim.SGD(lr=0.1))
    expected = re.escape("x[37, 5, 6] is nan (sample 37); 1 such value in 1 sample")
    for call in (
        lambda: trainer.fit(xf, y, verbose=0),
        lambda: trainer.evaluate(xf, y),
        lambda: model.predict(xf),
        lambda: model.predict_proba(xf),
        lambda: model.predict(xf.astype(np.float64)),
    ):
        with pytest.raises(ValueError, match=expected):
            call()
    with pytest.raises(ValueError, match=re.escape("x[37, 146] is nan (sample 37)")):
        model.predict(xf.reshape(64, 784))  # the compiled inference plan's path
    with pytest.raises(ValueError, match=re.escape("x_val[37, 5, 6] is nan")):
        trainer.fit(x, y, validation_data=(xf, y), verbose=0)
    # the index is the caller's, not the shuffled split's
    with pytest.raises(ValueError, match=expected):
        trainer.fit(xf, y, validation_split=0.5, verbose=0)


def test_float64_beyond_float32_range_is_named():
    x = np.zeros((3, 4), np.float64)
    x[2, 1] = 1e300
    with pytest.raises(
        ValueError, match=re.escape("x[2, 1] = 1e+300, beyond float32's range (sample 2)")
    ):
        to_float(x)


def test_float_images_in_0_255_warn_with_the_fix():
    x, y = images()
    trainer = fastnn.Trainer(mlp(), optim.SGD(lr=0.01))
    with pytest.warns(UnscaledPixelsWarning, match=re.escape("Pass x / 255")) as record:
        trainer.fit(x.astype(np.float32), y, verbose=0)
    assert record[0].filename == __file__  # points at the caller's line
    with pytest.warns(UnscaledPixelsWarning, match="x_val"):
        trainer.fit(x / 255, y, validation_data=(x.astype(np.float64), y), verbose=0)
    with pytest.warns(UnscaledPixelsWarning):
        trainer.evaluate(x.astype(np.float32), y)


@pytest.mark.parametrize(
    "transform",
    [
        lambda x: x,  # uint8: scaled inside
        lambda x: x.astype(np.float32) / 255,  # already scaled
        lambda x: x.astype(np.float32) / 127.5 - 1,  # [-1, 1]
        lambda x: (x.astype(np.float32) - 33.3) / 78.6,  # standardized
        lambda x: x.astype(np.float32) + 0.5,  # not whole numbers
        lambda x: np.minimum(x, 1).astype(np.float32),  # binary 0/1 images
    ],
)
def test_no_warning_for_scaled_or_non_pixel_data(transform):
    x, y = images()
    trainer = fastnn.Trainer(mlp(), optim.SGD(lr=0.01))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnscaledPixelsWarning)
        trainer.fit(transform(x), y, verbose=0)
