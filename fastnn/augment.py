"""Data augmentation run inside the training loop's batch gather.

`Trainer.fit(x, y, augment=RandomAffine(shift=0.1, rotate=10, scale=0.1))` gathers each
shuffled batch and warps every image by its own random affine map in one compiled pass
(`gather_affine` of the cpu backend), instead of a copy followed by a warp. The maps are drawn
from fastnn's random stream (`fastnn.seed`), computed in float64 in Python and applied with a
fixed order of operations per pixel, so a seeded run is bitwise reproducible at any thread
count. Evaluation and prediction never augment.
"""

import math
import numbers

import numpy as np

from . import _random


def _fraction(name, value, maximum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not (math.isfinite(value) and 0.0 <= value <= maximum):
        raise ValueError(f"{name} must be in [0, {maximum}], got {value}")
    return value


class Augmentation:
    """Base class: `matrices(n, height, width, rng)` gives each image's sampling map."""

    def matrices(self, n, height, width, rng):
        raise NotImplementedError

    def config(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def __call__(self, x, backend="cpu"):
        """Augmented copies of the images x (N, C, H, W) or (N, H, W) floats, drawn from
        fastnn's random stream (the same draws fit makes for a batch of N)."""
        from . import backends

        b = backends.get(backend) if isinstance(backend, str) else backend
        x = np.asarray(x)
        images = x[:, None] if x.ndim == 3 else x
        if images.ndim != 4:
            raise ValueError(f"x must have shape (N, H, W) or (N, C, H, W), got {x.shape}")
        m = self.matrices(images.shape[0], images.shape[2], images.shape[3], _random.generator())
        out = b.gather_affine(images, np.arange(images.shape[0]), m)
        return out.reshape(x.shape)


class RandomAffine(Augmentation):
    """Each image is rotated by up to +-`rotate` degrees, scaled by a factor in
    [1 - scale, 1 + scale] and shifted by up to +-`shift` of its width and height, about its
    centre, all uniformly at random; bilinear sampling, zeros where the source lies outside."""

    def __init__(self, shift=0.0, rotate=0.0, scale=0.0):
        self.shift = _fraction("shift", shift, 0.5)
        self.rotate = _fraction("rotate", rotate, 180.0)
        self.scale = _fraction("scale", scale, 0.9)

    def config(self):
        return {"shift": self.shift, "rotate": self.rotate, "scale": self.scale}

    def matrices(self, n, height, width, rng):
        """(n, 6) float64 maps from an output pixel (row i, column j) to its source point:
        column a*j + b*i + c, row d*j + e*i + f (the inverse of the random transform)."""
        angle = np.radians(rng.uniform(-self.rotate, self.rotate, n))
        factor = rng.uniform(1.0 - self.scale, 1.0 + self.scale, n)
        tx = rng.uniform(-self.shift, self.shift, n) * width
        ty = rng.uniform(-self.shift, self.shift, n) * height
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        cos, sin = np.cos(angle) / factor, np.sin(angle) / factor
        m = np.empty((n, 6))
        m[:, 0], m[:, 1] = cos, sin
        m[:, 3], m[:, 4] = -sin, cos
        m[:, 2] = cx - cos * (cx + tx) - sin * (cy + ty)
        m[:, 5] = cy + sin * (cx + tx) - cos * (cy + ty)
        return m


def check(augment):
    """`augment` as an Augmentation, or None."""
    if augment is None or isinstance(augment, Augmentation):
        return augment
    raise TypeError(
        f"augment must be a fastnn.augment.Augmentation such as RandomAffine(...), "
        f"got {type(augment).__name__}"
    )
