"""MNIST-style preprocessing of drawings: bounding box into 20x20 keeping the aspect ratio,
anti-aliased, centre of mass at the centre of the 28x28 field."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastnn.demo.preprocess import _box_filter, mnist_style


def _centre_of_mass(image):
    rows, cols = np.indices(image.shape)
    return (image * rows).sum() / image.sum(), (image * cols).sum() / image.sum()


def _ink_box(image, threshold=0.0):
    rows = np.flatnonzero((image > threshold).any(axis=1))
    cols = np.flatnonzero((image > threshold).any(axis=0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def test_empty_drawing_gives_zeros():
    out = mnist_style(np.zeros((280, 280)))
    assert out.shape == (28, 28) and out.dtype == np.float32 and not out.any()


def test_a_tall_bar_becomes_20_high_and_keeps_its_aspect_ratio():
    drawing = np.zeros((300, 300))
    drawing[40:240, 100:140] = 1.0  # 200 x 40: a "1"
    out = mnist_style(drawing)
    assert _ink_box(out) == (20, 4)
    assert out.max() == pytest.approx(1.0)
    assert np.allclose(_centre_of_mass(out), (14, 14), atol=0.5)


def test_anti_aliasing_keeps_the_ink():
    drawing = np.zeros((280, 280))
    drawing[10:210, 50:57] = 1.0  # an "L" 200 high, 100 wide, scaled by 1/10: its 7-pixel
    drawing[203:210, 50:150] = 1.0  # strokes cover 0.7 of an output pixel
    out = mnist_style(drawing)
    # the box filter spreads the stroke over grey pixels and keeps its area (ink is conserved)
    assert 0 < out[out > 0].min() < 1
    assert out.sum() == pytest.approx(drawing.sum() / 100, rel=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 120),
    st.integers(1, 120),
    st.integers(0, 60),
    st.integers(0, 60),
    st.floats(0.05, 1.0),
)
def test_any_blob_fits_the_box_centred(h, w, top, left, ink):
    drawing = np.zeros((200, 200))
    drawing[top : top + h, left : left + w] = ink
    out = mnist_style(drawing)
    box_h, box_w = _ink_box(out)
    assert max(box_h, box_w) == 20 or max(h, w) < 20 and max(box_h, box_w) <= 20
    assert abs(box_h / box_w - h / w) <= 1.0 * max(h / w, 1) or min(box_h, box_w) == 1
    assert np.allclose(_centre_of_mass(out), (14, 14), atol=0.5 + 1e-9)
    assert 0 <= out.min() and out.max() <= 1


def test_mnist_digits_come_back_as_themselves(default_served, mnist_test):
    """An MNIST digit drawn 10x larger comes back exactly as it was: same 20-pixel box, same
    centre of mass at pixel (14, 14), same rounding."""
    x = mnist_test[0]
    digits = x[:200] / 255.0
    again = np.stack([mnist_style(np.kron(d, np.ones((10, 10)))) for d in digits])
    np.testing.assert_allclose(again, digits, atol=1e-6)
    assert (default_served.model.predict(again) == default_served.model.predict(digits)).all()


def test_box_filter_averages():
    for n_in, n_out in ((280, 20), (7, 20), (20, 20), (3, 2)):
        m = _box_filter(n_in, n_out)
        assert m.shape == (n_out, n_in)
        assert np.allclose(m.sum(axis=1), 1)
        assert np.allclose(m.sum(axis=0), n_out / n_in)  # every input counts the same


@pytest.mark.parametrize(
    "bad,error", [(np.zeros(5), "2-D"), (np.zeros((0, 4)), "2-D"), (np.full((4, 4), np.nan), "NaN")]
)
def test_bad_drawings(bad, error):
    with pytest.raises(ValueError, match=error):
        mnist_style(bad)
