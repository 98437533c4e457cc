"""A drawing turned into an MNIST-style 28x28 input, the way the MNIST digits were made.

LeCun, Cortes and Burges describe it: the digit's bounding box is scaled to fit a 20x20 box,
keeping its aspect ratio (the anti-aliasing of that scaling gives the grey levels), then the
result is placed in a 28x28 field so that its centre of mass is at the centre (pixel
(14, 14) of the test set's digits, to within a third of a pixel). Here the
scaling is an exact box filter (each output pixel is the area-weighted mean of the input
pixels it covers), which is the anti-aliasing a pen drawing on a large canvas needs.
"""

import numpy as np

SIZE = 28
BOX = 20
# Input pixels above this are ink. Zero, as MNIST's boxes include their faintest grey pixels.
INK_THRESHOLD = 0.0


def _box_filter(n_in, n_out):
    """(n_out, n_in) matrix: row i averages the input cells under output cell i, weighted by
    the overlap of [j, j+1) with [i * n_in / n_out, (i + 1) * n_in / n_out)."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def mnist_style(drawing):
    """A (28, 28) float32 image in [0, 1] from `drawing`: a 2-D array of ink in [0, 1] (white
    digit on black, any size). An empty drawing gives all zeros."""
    a = np.asarray(drawing, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"drawing must be a non-empty 2-D array, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError("drawing holds NaN or infinite values")
    a = np.clip(a, 0.0, 1.0)
    ink = a > INK_THRESHOLD
    out = np.zeros((SIZE, SIZE), np.float32)
    if not ink.any():
        return out
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    crop = a[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = BOX / max(h, w)
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    small = _box_filter(h, new_h) @ crop @ _box_filter(w, new_w).T
    # the centre of mass (in pixel indices) moved to pixel (14, 14), where MNIST's digits have
    # it, by whole pixels as in MNIST (a sub-pixel shift would blur), keeping the digit inside
    mass = small.sum()
    cy = (small.sum(axis=1) @ np.arange(new_h)) / mass
    cx = (small.sum(axis=0) @ np.arange(new_w)) / mass
    top = int(np.clip(round(SIZE // 2 - cy), 0, SIZE - new_h))
    left = int(np.clip(round(SIZE // 2 - cx), 0, SIZE - new_w))
    out[top : top + new_h, left : left + new_w] = small
    return out
