"""Learning-rate schedules: a factor of the optimizer's base lr as a function of training time.

Time is measured in epochs and may be fractional (epoch 2.5 is half way through the third),
so a schedule can change the rate every step; the trainer evaluates it before each step.
"""

import math

from .validation import integer, real


class Schedule:
    def __call__(self, epoch):
        """The factor applied to the base lr at (fractional) `epoch`, counted from 0."""
        raise NotImplementedError

    def config(self):
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


class StepLR(Schedule):
    """Multiply the rate by `gamma` every `step_size` epochs."""

    def __init__(self, step_size, gamma=0.1):
        self.step_size = integer("step_size", step_size, 1)
        self.gamma = real("gamma", gamma, 0.0, min_inclusive=False)

    def __call__(self, epoch):
        return self.gamma ** (int(epoch) // self.step_size)

    def config(self):
        return {"step_size": self.step_size, "gamma": self.gamma}


class CosineLR(Schedule):
    """Cosine decay from the base rate to `min_factor` of it over `epochs`, after an optional
    linear warm-up over `warmup` epochs from `warmup_start` of the rate; stays at the minimum
    after `epochs`. (An optimizer skips its update while the rate is exactly 0.)"""

    def __init__(self, epochs, min_factor=0.0, warmup=0.0, warmup_start=0.01):
        self.epochs = real("epochs", epochs, 0.0, min_inclusive=False)
        self.min_factor = real("min_factor", min_factor, 0.0, 1.0)
        self.warmup = real("warmup", warmup, 0.0)
        self.warmup_start = real("warmup_start", warmup_start, 0.0, 1.0, min_inclusive=False)
        if self.warmup >= self.epochs:
            raise ValueError(f"warmup ({self.warmup}) must be shorter than epochs ({self.epochs})")

    def __call__(self, epoch):
        if epoch < self.warmup:
            return self.warmup_start + (1.0 - self.warmup_start) * epoch / self.warmup
        t = min(1.0, (epoch - self.warmup) / (self.epochs - self.warmup))
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * t))

    def config(self):
        cfg = {"epochs": self.epochs, "min_factor": self.min_factor}
        if self.warmup:
            cfg.update(warmup=self.warmup, warmup_start=self.warmup_start)
        return cfg


class OneCycleLR(Schedule):
    """PyTorch's one-cycle policy (cosine annealing, two phases) over `epochs`: the rate rises
    from base/div_factor to the base rate over the first `pct_start` of training, then falls to
    base/(div_factor*final_div_factor) at the end, and stays there. The optimizer's lr is the
    peak (PyTorch's max_lr)."""

    def __init__(self, epochs, pct_start=0.3, div_factor=25.0, final_div_factor=1e4):
        self.epochs = real("epochs", epochs, 0.0, min_inclusive=False)
        self.pct_start = real("pct_start", pct_start, 0.0, 1.0, min_inclusive=False)
        if self.pct_start >= 1.0:
            raise ValueError(f"pct_start must be < 1, got {self.pct_start}")
        self.div_factor = real("div_factor", div_factor, 1.0)
        self.final_div_factor = real("final_div_factor", final_div_factor, 1.0)

    @staticmethod
    def _cosine(start, end, t):
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * t))

    def __call__(self, epoch):
        start = 1.0 / self.div_factor
        low = start / self.final_div_factor
        peak_at = self.pct_start * self.epochs
        if epoch < peak_at:
            return self._cosine(start, 1.0, epoch / peak_at)
        t = min(1.0, (epoch - peak_at) / (self.epochs - peak_at))
        return self._cosine(1.0, low, t)

    def config(self):
        return {
            "epochs": self.epochs,
            "pct_start": self.pct_start,
            "div_factor": self.div_factor,
            "final_div_factor": self.final_div_factor,
        }
