"""Optimizers: SGD (momentum, Nesterov, weight decay), Adam and AdamW (decoupled weight decay),
updating parameters in place through the backend's sgd_step / adam_step kernels; any of them
can first clip the gradients to a global L2 norm (`clip_norm=`).

An optimizer is created without parameters (`optim.SGD(lr=0.05, momentum=0.9)`) and attached
to a model by the Trainer (or `attach(model)`); its state (momentum, Adam moments, step count)
is kept per parameter name, so `state_dict()` / `load_state_dict()` round-trip through a
checkpoint and survive the model moving to another backend.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import numpy as np

from .schedules import CosineLR, OneCycleLR, Schedule, StepLR
from .validation import real

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "CosineLR",
    "OneCycleLR",
    "Optimizer",
    "Schedule",
    "StepLR",
    "global_norm",
]


class Optimizer:
    """Base class: learning rate, schedule, per-parameter state, attach/step/state_dict."""

    buffer_names: tuple[str, ...] = ()

    def __init__(
        self,
        lr: float,
        schedule: Schedule | Callable[[float], float] | None = None,
        clip_norm: float | None = None,
    ) -> None:
        self.base_lr = real("lr", lr, 0.0, min_inclusive=False)
        # scale the gradients down to this global L2 norm before each step (None: never)
        self.clip_norm = (
            None if clip_norm is None else real("clip_norm", clip_norm, 0.0, min_inclusive=False)
        )
        self.lr = self.base_lr
        if schedule is not None and not callable(schedule):
            raise TypeError(
                f"schedule must be a fastnn schedule or a callable epoch -> factor, "
                f"got {type(schedule).__name__}"
            )
        self.schedule = schedule
        self.steps = 0
        self._model: Any = None
        self._backend: Any = None
        self._state: dict[str, dict[str, Any]] = {}  # parameter name -> {buffer: array}
        self._slots: list[Any] = []  # the model's parameter slots, for step()
        self._buffers: list[list[Any]] = []  # per buffer name, its arrays parallel to _slots

    # ---- binding -------------------------------------------------------------------------------

    def attach(self, model: Any) -> Optimizer:
        """Bind to `model`'s parameters on its current backend, keeping (and moving) any state
        already held for the same names. Called by Trainer.fit."""
        b = model.backend
        state = {}
        slots = model.parameter_slots()
        for slot in slots:
            p, name = slot.value, slot.name
            bufs = self._state.get(name)
            if bufs is None:
                bufs = {k: b.zeros(p.shape, p.dtype) for k in self.buffer_names}
            else:
                bufs = {k: self._moved(name, k, bufs[k], p, b) for k in self.buffer_names}
            state[name] = bufs
        self._state = state
        self._slots = slots
        self._buffers = [[state[slot.name][k] for slot in slots] for k in self.buffer_names]
        self._model = model
        self._backend = b
        return self

    def _moved(self, name, key, buf, param, backend):
        old = self._backend if self._backend is not None else backend
        host = buf if isinstance(buf, np.ndarray) else old.to_numpy(buf)
        if tuple(host.shape) != tuple(param.shape):
            raise ValueError(
                f"optimizer state {name}/{key} has shape {tuple(host.shape)} but the "
                f"parameter has shape {tuple(param.shape)}"
            )
        if backend is old and host is buf and buf.dtype == param.dtype and type(buf) is type(param):
            return buf
        return backend.asarray(np.ascontiguousarray(host, dtype=param.dtype))

    def set_epoch(self, epoch: float) -> None:
        """Apply the schedule at (fractional) `epoch`."""
        if self.schedule is not None:
            self.lr = self.base_lr * float(self.schedule(epoch))

    def _check_attached(self):
        if self._model is None:
            raise RuntimeError(
                f"{type(self).__name__} is not attached to a model; pass it to "
                f"fastnn.Trainer or call optimizer.attach(model)"
            )

    def step(self) -> None:
        raise NotImplementedError

    def _clip_gradients(self):
        """Scale every gradient by clip_norm / (global norm) when the norm exceeds clip_norm.
        The norm is summed in float64 in parameter order: the same bits at any thread count."""
        grads = [slot.grad for slot in self._slots]
        norm = global_norm(grads, self._backend)
        if norm > self.clip_norm:
            factor = self.clip_norm / norm
            for g in grads:
                g *= g.dtype.type(factor)
        return norm

    # ---- checkpoints ---------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        return {"lr": self.base_lr, **self._clip_config()}

    def _clip_config(self) -> dict[str, Any]:
        """clip_norm as config() records it: only where set, so configs without it read as
        before clip_norm existed."""
        return {} if self.clip_norm is None else {"clip_norm": self.clip_norm}

    def state_dict(self) -> dict[str, Any]:
        """{"type", "config", "steps", "lr", "state": {param name: {buffer: numpy array}}}."""

        def host(a):
            return np.array(
                a if isinstance(a, np.ndarray) else self._backend.to_numpy(a), copy=True
            )

        return {
            "type": type(self).__name__,
            "config": self.config(),
            "steps": self.steps,
            "lr": self.lr,
            "state": {
                name: {k: host(a) for k, a in bufs.items()} for name, bufs in self._state.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore step count, current lr and buffers from state_dict(); hyperparameters stay as
        constructed. Shapes are checked against the model now if attached, else at attach."""
        if not isinstance(state, dict) or state.get("type") != type(self).__name__:
            found = state.get("type") if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"optimizer state is for {found!r}, not {type(self).__name__}")
        steps = state.get("steps")
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
            raise ValueError(f"optimizer state has an invalid step count {steps!r}")
        lr = real("lr", state.get("lr"), 0.0)
        buffers = state.get("state")
        if not isinstance(buffers, dict):
            raise ValueError("optimizer state lacks its 'state' dict")
        restored: dict[str, dict[str, Any]] = {}
        for name, bufs in buffers.items():
            if not isinstance(bufs, dict) or set(bufs) != set(self.buffer_names):
                raise ValueError(f"optimizer state for {name!r} must hold {self.buffer_names}")
            restored[name] = {}
            for k, a in bufs.items():
                a = np.asarray(a)
                if a.dtype.kind != "f" or not np.isfinite(a).all():
                    raise ValueError(f"optimizer state {name}/{k} must be finite floats")
                restored[name][k] = np.array(a, copy=True)
        if self._model is not None:
            expected = {slot.name for slot in self._model.parameter_slots()}
            if set(restored) != expected:
                raise ValueError(
                    f"optimizer state names {sorted(restored)} do not match the "
                    f"model's parameters {sorted(expected)}"
                )
        self.steps, self.lr = int(steps), lr
        self._state = restored
        self._backend = None
        if self._model is not None:
            self.attach(self._model)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        if self.schedule is not None:
            args += f", schedule={self.schedule!r}"
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """PyTorch's SGD: g = grad + weight_decay * p; v = momentum * v + g;
    p -= lr * (g + momentum * v if nesterov else v)."""

    def __init__(
        self,
        lr: float = 0.01,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        schedule: Schedule | Callable[[float], float] | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, schedule, clip_norm)
        self.momentum = real("momentum", momentum, 0.0, below=1.0)
        self.weight_decay = real("weight_decay", weight_decay, 0.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise TypeError(f"nesterov must be a bool, got {type(nesterov).__name__}")
        if nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.nesterov = bool(nesterov)
        self.buffer_names = ("velocity",) if self.momentum > 0 else ()

    def config(self):
        return {
            "lr": self.base_lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            **self._clip_config(),
        }

    def step(self):
        """One update of every parameter from its gradient (skipped while lr is 0)."""
        self._check_attached()
        if self.clip_norm is not None:
            self._clip_gradients()
        if self.lr > 0:  # one call for the whole model
            slots = self._slots
            self._backend.sgd_step_many(
                [s.value for s in slots],
                [s.grad for s in slots],
                self._buffers[0] if self.momentum else None,
                lr=self.lr,
                momentum=self.momentum,
                weight_decay=self.weight_decay,
                nesterov=self.nesterov,
            )
        self.steps += 1


class Adam(Optimizer):
    """PyTorch's Adam (weight decay added to the gradient, bias-corrected moments)."""

    buffer_names = ("m", "v")

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        schedule: Schedule | Callable[[float], float] | None = None,
        clip_norm: float | None = None,
    ) -> None:
        super().__init__(lr, schedule, clip_norm)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas must be a pair of numbers, got {betas!r}")
        self.betas = (
            real("beta1", betas[0], 0.0, below=1.0),
            real("beta2", betas[1], 0.0, below=1.0),
        )
        self.eps = real("eps", eps, 0.0, min_inclusive=False)
        self.weight_decay = real("weight_decay", weight_decay, 0.0)

    def config(self):
        return {
            "lr": self.base_lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            **self._clip_config(),
        }

    def _l2_decay(self):
        """The weight decay added to the gradient (Adam's L2 penalty)."""
        return self.weight_decay

    def step(self):
        self._check_attached()
        if self.clip_norm is not None:
            self._clip_gradients()
        if self.lr > 0:  # one call for the whole model
            decay = self._l2_decay()
            slots, (ms, vs) = self._slots, self._buffers
            self._backend.adam_step_many(
                [s.value for s in slots],
                [s.grad for s in slots],
                ms,
                vs,
                lr=self.lr,
                step=self.steps + 1,
                beta1=self.betas[0],
                beta2=self.betas[1],
                eps=self.eps,
                weight_decay=decay,
            )
        self.steps += 1


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter; PyTorch's AdamW): each step first
    shrinks every parameter by lr * weight_decay of itself, then takes the Adam step on the
    plain gradient, so the decay is not rescaled by Adam's per-parameter step sizes."""

    def __init__(
        self,
        lr=1e-3,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.01,
        schedule=None,
        clip_norm=None,
    ):
        super().__init__(lr, betas, eps, weight_decay, schedule, clip_norm)

    def _l2_decay(self):
        factor = 1.0 - self.lr * self.weight_decay
        if self.weight_decay and factor != 1.0:
            for slot in self._slots:
                p = slot.value
                p *= p.dtype.type(factor)
        return 0.0


def global_norm(arrays, backend=None):
    """The L2 norm of all the arrays together, as a float: each array's sum of squares in
    float64, added in list order."""
    total = 0.0
    for a in arrays:
        if a is None:
            continue
        host = a if isinstance(a, np.ndarray) else backend.to_numpy(a)
        flat = host.reshape(-1).astype(np.float64)
        total += float(flat @ flat)
    return math.sqrt(total)
