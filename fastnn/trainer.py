"""Trainer: fit / evaluate / predict a Sequential with an optimizer and a loss on a backend.

Every argument is checked before any work. The data is converted once (uint8 images scaled to
[0, 1]) and moved to the backend; each step gathers its batch into a buffer allocated once,
so the loop between kernels is a few attribute lookups.

Ctrl-C during fit finishes the current step, then returns the history marked interrupted,
with the model as that step left it (a second Ctrl-C stops at once).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import _exclusive, _random, backends, losses, validation
from . import augment as aug
from . import callbacks as cb
from . import checkpoint as ckpt
from .datasets import nonfinite_message, train_val_split, warn_if_unscaled_pixels
from .model import Sequential, host_array
from .optim import Optimizer

# x and y: NumPy arrays (or anything np.asarray takes), or a device backend's arrays
ArrayLike = Any

# On a device backend the loss is fetched (a synchronization) every this many steps, and at
# the end of each epoch; that is also when a non-finite loss is noticed.
DEVICE_CHECK_INTERVAL = 50
EVAL_BATCH_SIZE = 1024


def _split(x, y, fraction, xp):
    """train_val_split from fastnn's random stream; device arrays are split where they are,
    by the same draw (the same split as their host copies would get)."""
    if isinstance(x, np.ndarray):
        return train_val_split(x, y, fraction, _random.generator())
    index = np.arange(x.shape[0])
    (train, _), (held, _) = train_val_split(index, index, fraction, _random.generator())
    train, held = xp.asarray(train), xp.asarray(held)
    return (x[train], y[train]), (x[held], y[held])


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the epoch and step."""


class History(dict):
    """Per-epoch lists: loss, accuracy, val_loss, val_accuracy (with validation), lr,
    epoch_time (s, training steps only) and samples_per_s.

    `interrupted` is True when Ctrl-C (or KeyboardInterrupt from a callback) stopped the fit;
    `stopped_at` then gives {"epoch": e, "step": s}: the epoch (from 1) that was running and
    the number of its steps completed. Unfinished epochs are not in the lists.
    """

    def __init__(self):
        super().__init__(loss=[], accuracy=[], lr=[], epoch_time=[], samples_per_s=[])
        self.interrupted = False
        self.stopped_at = None

    @property
    def history(self) -> History:
        """Keras spelling: `history.history["loss"]`."""
        return self

    @property
    def epochs(self) -> int:
        return len(self["loss"])

    def __repr__(self):
        state = ", interrupted" if self.interrupted else ""
        epochs = f"{self.epochs} epoch{'' if self.epochs == 1 else 's'}"
        return f"History({epochs}{state}: {dict.__repr__(self)})"


_int_arg = validation.integer


class Trainer:
    """Train `model` with `optimizer` on `backend` ("cpu", "numpy" or "cuda").

    `seed` (an int) gives the trainer a random stream of its own for the validation split,
    the shuffling and the dropout masks, so its runs repeat whatever other threads draw;
    without it they come from fastnn's process-wide stream (`fastnn.seed`). One model (and
    one optimizer) trains in one thread at a time: fit or train_step while another thread
    trains it raises ConcurrentTrainingError.
    """

    def __init__(
        self,
        model: Sequential,
        optimizer: Optimizer,
        loss: str | losses.Loss = "cross_entropy",
        backend: str | Any = "cpu",
        *,
        seed: int | None = None,
    ) -> None:
        if not isinstance(model, Sequential):
            raise TypeError(f"model must be a fastnn Sequential, got {type(model).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(
                f"optimizer must be a fastnn optimizer (optim.SGD, optim.Adam), "
                f"got {type(optimizer).__name__}"
            )
        if not model.param_shapes():
            raise ValueError("the model has no parameters to train")
        # this trainer's own random stream (None: the thread's current one), see _running
        self._stream = None if seed is None else _random.Stream.from_seed(seed)
        self.loss = losses.get(loss)
        self.backend = backends.get(backend)
        self.model = model.to(self.backend)
        self.optimizer = optimizer
        self.history = None
        self.stop_training = False
        self._interrupt_requested = False
        self._step_state: Any = None  # (backend, bound loss, output-gradient buffer)

    # ---- argument checks (no work) --------------------------------------------------------------

    def _classes(self, sample_shape, what):
        out = self.model.output_shape(sample_shape)
        if len(out) != 1:
            raise ValueError(
                f"the model's output for {what} has shape {out} per sample; "
                f"classification needs one score per class (add nn.Flatten())"
            )
        return out[0]

    def _check_data(self, x, y, xname="x", yname="y"):
        """x as an array of images/features, y as int64 labels within the model's classes.
        Device arrays of the trainer's backend stay on the device (the label range check reads
        two numbers back); others become numpy arrays."""
        xp = self.backend.xp
        on_device = isinstance(x, xp.ndarray) and not isinstance(x, np.ndarray)
        if not on_device:
            x = host_array(x)
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{xname} must be uint8 images or floating point, got dtype {x.dtype}")
        if x.ndim < 2 or x.shape[0] < 1:
            raise ValueError(f"{xname} must have shape (N, ...) with N >= 1, got {x.shape}")
        y = y if on_device and isinstance(y, xp.ndarray) else host_array(y)
        classes = self._classes(
            self.model._sample_shape(x.shape[1:]), f"{xname} of shape {x.shape}"
        )
        if y.ndim == 2 and y.shape == (x.shape[0], classes) and y.dtype.kind in "iufb":
            raise ValueError(
                f"{yname} looks one-hot encoded (shape {y.shape}); pass class "
                f"indices of shape ({x.shape[0]},) instead: {yname}.argmax(axis=1)"
            )
        if y.dtype.kind not in "iu":
            hint = ""
            if (
                y.dtype.kind == "f"
                and y.size
                and isinstance(y, np.ndarray)
                and np.array_equal(y, np.round(y))
            ):
                hint = f"; these are whole numbers: pass {yname}.astype(np.int64)"
            raise TypeError(f"{yname} must hold integer class labels, got dtype {y.dtype}{hint}")
        if y.shape != (x.shape[0],):
            raise ValueError(
                f"{yname} must have shape ({x.shape[0]},) to match {xname} with "
                f"{x.shape[0]} samples, got {y.shape}"
            )
        if not on_device:
            warn_if_unscaled_pixels(x, xname, stacklevel=3)
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= classes:
            raise ValueError(
                f"{yname} holds label {low if low < 0 else high}, outside "
                f"[0, {classes}) for a model with {classes} outputs"
            )
        if on_device:
            return x, xp.asarray(y, dtype=np.int64)
        return x, y.astype(np.int64)

    def _check_callbacks(self, callbacks):
        if callbacks is None:
            return []
        if not isinstance(callbacks, (list, tuple)):
            callbacks = [callbacks]
        for c in callbacks:
            if not any(cb.defines(c, hook) for hook in cb.HOOKS):
                raise TypeError(f"callback {c!r} defines none of {cb.HOOKS}")
        return list(callbacks)

    # ---- public API ------------------------------------------------------------------------------

    def fit(
        self,
        x: ArrayLike,
        y: ArrayLike,
        epochs: int = 1,
        batch_size: int = 128,
        *,
        validation_split: float | None = None,
        validation_data: tuple[ArrayLike, ArrayLike] | None = None,
        shuffle: bool = True,
        callbacks: Sequence[Any] | None = None,
        verbose: int = 1,
        progress: bool | None = None,
        checkpoint: str | os.PathLike | None = None,
        resume: str | os.PathLike | None = None,
        initial_epoch: int = 0,
        augment: Any = None,
    ) -> History:
        """Train for `epochs` passes over (x, y); returns (and keeps in self.history) a History.

        x: uint8 images (scaled to [0, 1] inside) or floats, shape (N, ...) matching the model;
        y: integer labels. validation_split (a fraction held out at random) or
        validation_data=(x_val, y_val) adds val_loss and val_accuracy. verbose=0 prints
        nothing, 1 one line per epoch; progress (default: when verbose and on a terminal) shows
        a tqdm bar. checkpoint=PATH saves a checkpoint after every epoch, atomically;
        resume=PATH continues from one (`epochs` counts from the start of the original run),
        ending as the uninterrupted run would (see fastnn.checkpoint).

        Called again, fit continues from the current weights and optimizer state (momentum,
        Adam moments), but the history and the schedule start over at epoch 0. To continue a
        schedule instead, pass initial_epoch (as Keras does): fit(..., epochs=10,
        initial_epoch=5) runs epochs 6 to 10 with the learning rate of those epochs, and the
        returned history holds those five. augment (e.g.
        fastnn.augment.RandomAffine(shift=0.1, rotate=10)) transforms each training batch as
        it is gathered (images only: the model's input must be (C, H, W) per sample).
        """
        epochs = _int_arg("epochs", epochs, 1)
        initial_epoch = _int_arg("initial_epoch", initial_epoch, 0)
        if initial_epoch >= epochs:
            raise ValueError(
                f"initial_epoch ({initial_epoch}) must be less than epochs "
                f"({epochs}): epochs is the number to end at, counted from 0"
            )
        if initial_epoch and (checkpoint is not None or resume is not None):
            raise ValueError(
                "initial_epoch cannot be combined with checkpoint= or resume= "
                "(a checkpointed run resumes at its own epoch)"
            )
        batch_size = _int_arg("batch_size", batch_size, 1)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle must be a bool, got {type(shuffle).__name__}")
        verbose = _int_arg("verbose", int(verbose) if isinstance(verbose, bool) else verbose, 0)
        callbacks = self._check_callbacks(callbacks)
        augment = aug.check(augment)
        if augment is not None and "gather_affine" not in self.backend.optional:
            raise ValueError(
                f"augment needs a backend with the gather_affine kernel (cpu, "
                f"numpy); {self.backend.name!r} has none"
            )
        x, y = self._check_data(x, y)
        if validation_split is not None and validation_data is not None:
            raise ValueError("pass validation_split or validation_data, not both")
        if validation_split is not None:
            if isinstance(validation_split, bool) or not isinstance(
                validation_split, (int, float, np.floating)
            ):
                raise TypeError(f"validation_split must be a fraction, got {validation_split!r}")
            n_val = int(round(x.shape[0] * float(validation_split)))
            if not 0.0 < validation_split < 1.0 or not 1 <= n_val < x.shape[0]:
                raise ValueError(
                    f"validation_split must be in (0, 1) and leave at least one "
                    f"sample on each side, got {validation_split} of {x.shape[0]}"
                )
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise TypeError("validation_data must be a pair (x_val, y_val)")
            x_val, y_val = self._check_data(*validation_data, "x_val", "y_val")
            if x_val.shape[1:] != x.shape[1:]:
                raise ValueError(
                    f"x_val samples have shape {x_val.shape[1:]} but x samples have {x.shape[1:]}"
                )
            val = (x_val, y_val)
        if not self.optimizer.base_lr > 0:
            raise ValueError(f"lr must be > 0, got {self.optimizer.base_lr}")
        if progress is None:
            progress = bool(verbose) and sys.stderr.isatty()

        with self._running():
            session = ckpt.Session.start(
                self,
                checkpoint,
                resume,
                x,
                y,
                dict(
                    batch_size=batch_size,
                    shuffle=bool(shuffle),
                    validation_split=None if validation_split is None else float(validation_split),
                ),
            )

            # ---- preparation: split, convert, move to the backend, bind the optimizer
            given_x = x
            if validation_split is not None:
                (x, y), val = _split(x, y, float(validation_split), self.backend.xp)
            model = self.model.to(self.backend)
            if model.input_shape is None:
                model.input_shape = tuple(x.shape[1:])
            try:
                # uint8 images stay uint8 on a host backend: each batch is scaled as it is
                # gathered (Backend.row_gatherer), never the whole set at once (augment's
                # gather warps float images)
                xs = model.prepare_input(x, keep_uint8=augment is None)
                ys = self.backend.xp.asarray(y)
                if val is not None:
                    val = (
                        model.prepare_input(val[0], "x_val" if validation_split is None else "x"),
                        self.backend.xp.asarray(val[1]),
                    )
            except ValueError:
                if (
                    x is not given_x
                    and isinstance(given_x, np.ndarray)
                    and not np.isfinite(given_x).all()
                ):  # index the caller's x,
                    raise ValueError(nonfinite_message(given_x)) from None  # not the split's
                raise
            if augment is not None and xs.ndim != 4:
                raise ValueError(
                    f"augment transforms images: the model's input must be (C, H, W) "
                    f"per sample, got {tuple(xs.shape[1:])}"
                )
            self.optimizer.attach(model)
            start, done = session.restore(self) if session is not None else (initial_epoch, None)
            return self._train(
                xs,
                ys,
                val,
                epochs,
                batch_size,
                shuffle,
                callbacks,
                verbose,
                progress,
                start,
                done,
                session,
                augment,
            )

    def train_step(self, x: ArrayLike, y: ArrayLike) -> Any:
        """One optimizer step on a batch already in the backend's form -- `x` of the model's
        dtype and per-sample shape, `y` int64 labels -- unchecked, for benchmarks and custom
        loops. Returns the batch's mean loss (a backend scalar). From the first call on, the
        model's training passes reuse their arrays, as during fit, until
        `model.set_reuse(False)`."""
        claimed = (("model", self.model), ("optimizer", self.optimizer))
        _exclusive._claim(claimed)  # inline, not `with self._running()`: this is per step
        try:
            if self._stream is None:
                return self._step(x, y)
            with _random.using(self._stream):
                return self._step(x, y)
        finally:
            _exclusive._release(claimed)

    def _step(self, x, y):
        model = self.model
        if (
            self._step_state is None
            or self._step_state[0] is not model.backend
            or not model.plan.reuse
        ):
            model.set_reuse(True)
            self.optimizer.attach(model)
            self._step_state = (model.backend, self.loss.bind(model.backend), None)
        out = model.forward(x, True)
        d_buf = self._step_state[2]
        if d_buf is None or d_buf.shape != out.shape or d_buf.dtype != out.dtype:
            d_buf = model.backend.xp.empty(out.shape, out.dtype)
            self._step_state = self._step_state[:2] + (d_buf,)
        loss, dout = self._step_state[1](out, y, d_buf)
        model.backward(dout)
        self.optimizer.step()
        return loss

    def evaluate(
        self, x: ArrayLike, y: ArrayLike, batch_size: int = EVAL_BATCH_SIZE
    ) -> dict[str, float]:
        """{"loss": mean loss, "accuracy": fraction correct} on (x, y), in inference mode."""
        batch_size = _int_arg("batch_size", batch_size, 1)
        x, y = self._check_data(x, y)
        model = self.model.to(self.backend)
        loss, accuracy = self._evaluate(
            model.prepare_input(x), self.backend.xp.asarray(y), batch_size
        )
        return {"loss": loss, "accuracy": accuracy}

    def predict(self, x: ArrayLike, batch_size: int = EVAL_BATCH_SIZE) -> Any:
        """Predicted class indices (numpy int64)."""
        return self.model.to(self.backend).predict(x, batch_size)

    def predict_proba(self, x: ArrayLike, batch_size: int = EVAL_BATCH_SIZE) -> Any:
        return self.model.to(self.backend).predict_proba(x, batch_size)

    # ---- the loop -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _running(self):
        """Claim the model and optimizer for this thread and, with a seed, draw from this
        trainer's stream, for the duration of a fit."""
        with _exclusive.training(self.model, self.optimizer):
            if self._stream is None:
                yield
            else:
                with _random.using(self._stream):
                    yield

    def _evaluate(self, x, y, batch_size):
        model, loss_fn, b = self.model, self.loss, self.backend
        n = x.shape[0]
        total = 0.0
        correct = 0
        for lo in range(0, n, batch_size):
            xb, yb = x[lo : lo + batch_size], y[lo : lo + batch_size]
            out = model.forward(xb, False)
            total = total + loss_fn.value(b, out, yb) * xb.shape[0]
            correct = correct + (out.argmax(axis=1) == yb).sum()
        return float(total) / n, float(correct) / n

    def _on_sigint(self, signum, frame):
        if self._interrupt_requested:
            raise KeyboardInterrupt
        self._interrupt_requested = True

    def _train(
        self,
        x,
        y,
        val,
        epochs,
        batch_size,
        shuffle,
        callbacks,
        verbose,
        progress,
        start=0,
        done_history=None,
        session=None,
        augment=None,
    ):
        model, opt, b = self.model, self.optimizer, self.backend
        xp = b.xp
        on_host = xp is np
        forward, backward, step_fn = model.forward, model.backward, opt.step
        loss_fn = self.loss.bind(b)
        n = x.shape[0]
        steps = -(-n // batch_size)
        # one buffer per epoch for the shuffled batch (the last, partial batch uses its head)
        rows = min(batch_size, n)
        scaled = x.dtype == np.uint8  # uint8 images: every batch goes through the gather
        dtype = model.dtype if scaled else x.dtype
        x_buf = xp.empty((rows, *x.shape[1:]), dtype=dtype)
        y_buf = xp.empty(rows, dtype=y.dtype)
        d_buf = xp.empty((rows, *model.output_shape(x.shape[1:])), dtype=dtype)
        schedule = opt.schedule is not None
        batch_hooks = [c for c in callbacks if cb.defines(c, "on_batch_end")]
        # the number of rows whose argmax is the label (argmax costs more Python-side time per
        # step than the rest of the loop)
        count_correct = b.count_correct
        # the shuffled batch gather, its arrays checked once here
        gather = b.row_gatherer(x, x_buf) if on_host else None
        # batches in order still go through the gather when it converts or warps them
        in_order = None if shuffle else np.arange(n, dtype=np.int64)
        host_gather = on_host and (shuffle or scaled or augment is not None)
        # on a device: running loss, accuracy and a non-finite loss flag that the optimizer
        # kernels honour, one launch per step, read at the sync points below (None where the
        # backend keeps none)
        running_metrics = None if on_host else b.running_metrics
        # on a device: the shuffled batch's inputs and labels in one launch
        batch_gather = None if on_host else b.batch_gatherer(x, y, x_buf, y_buf)
        tracker = None
        rng = _random.generator()
        if augment is not None:  # the gather warps each image too (fastnn.augment)
            height, width = x.shape[2], x.shape[3]
            gather_affine = b.gather_affine

            def gather(index):
                return gather_affine(
                    x, index, augment.matrices(index.shape[0], height, width, rng), out=x_buf
                )

        history = History()
        if done_history:  # resumed: the epochs already done
            history.update((key, list(values)) for key, values in done_history.items())
        self.history = history
        self.stop_training = False
        self._interrupt_requested = False
        previous_handler = None
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            previous_handler = signal.signal(signal.SIGINT, self._on_sigint)
        bar = None
        epoch, done = start, 0
        try:  # from here on, the finally below puts the SIGINT handler back
            self._call(callbacks, "on_train_begin", self)
            model.set_reuse(True)
            for epoch in range(start, epochs):
                self._call(callbacks, "on_epoch_begin", self, epoch)
                order = xp.asarray(rng.permutation(n)) if shuffle else None
                bar = tqdm(
                    total=steps,
                    desc=f"epoch {epoch + 1}/{epochs}",
                    unit="step",
                    leave=False,
                    disable=not progress,
                    file=sys.stderr,
                )
                loss_sum = 0.0
                correct = 0
                done = 0
                checked_at = 0
                if running_metrics is not None:
                    tracker = running_metrics()
                start = time.perf_counter()
                for step in range(steps):
                    if schedule:
                        opt.set_epoch(epoch + step / steps)
                    lo = step * batch_size
                    hi = min(lo + batch_size, n)
                    if host_gather:
                        idx = order[lo:hi] if shuffle else in_order[lo:hi]
                        xb = gather(idx)
                        yb = np.take(y, idx, out=y_buf[: hi - lo], mode="clip")
                    elif shuffle:  # on a device
                        xb, yb = batch_gather(order[lo:hi])
                    else:
                        xb, yb = x[lo:hi], y[lo:hi]
                    out = forward(xb, True)
                    loss, dout = loss_fn(out, yb, d_buf if hi - lo == rows else d_buf[: hi - lo])
                    if on_host:
                        value = float(loss)
                        if not math.isfinite(value):
                            raise NonFiniteLossError(
                                f"loss became {value} at epoch {epoch + 1}, step {step + 1} "
                                f"(the model keeps the weights from before this step)"
                            )
                        loss_sum += value * (hi - lo)
                        correct += int(count_correct(out, yb))
                    elif tracker is not None:
                        tracker.add(loss, out, yb, step + 1)
                    else:
                        loss_sum = loss_sum + loss * (hi - lo)
                        correct = correct + (out.argmax(axis=1) == yb).sum()
                    backward(dout)
                    step_fn()
                    done = step + 1
                    if batch_hooks:
                        for c in batch_hooks:
                            c.on_batch_end(self, epoch, step, loss)
                    if progress or not on_host:
                        if done % DEVICE_CHECK_INTERVAL == 0 or done == steps:
                            if tracker is not None:  # one sync for the three numbers
                                loss_sum, correct = self._read_tracker(tracker, epoch)
                            else:
                                self._check_running_loss(loss_sum, epoch, checked_at, done)
                            checked_at = done
                            bar.set_postfix(loss=f"{float(loss_sum) / hi:.4f}", refresh=False)
                        bar.update(1)
                    if self._interrupt_requested or self.stop_training:
                        break
                if tracker is not None:
                    if checked_at != done:  # stopped between checks: read (and sync) now
                        loss_sum, correct = self._read_tracker(tracker, epoch)
                    tracker.close()
                elif not on_host:
                    b.synchronize()
                elapsed = time.perf_counter() - start
                bar.close()
                if self._interrupt_requested:
                    raise KeyboardInterrupt
                if done < steps:  # stop_training from a callback mid-epoch
                    history.stopped_at = {"epoch": epoch + 1, "step": done}
                    break
                seen = float(n)
                logs = {"loss": float(loss_sum) / seen, "accuracy": float(correct) / seen}
                if not math.isfinite(logs["loss"]):
                    raise NonFiniteLossError(f"loss became non-finite during epoch {epoch + 1}")
                if val is not None:
                    logs["val_loss"], logs["val_accuracy"] = self._evaluate(*val, EVAL_BATCH_SIZE)
                logs.update(lr=opt.lr, epoch_time=elapsed, samples_per_s=n / elapsed)
                for key, value in logs.items():
                    history.setdefault(key, []).append(value)
                if verbose:
                    self._print_epoch(epoch, epochs, logs, progress)
                self._call(callbacks, "on_epoch_end", self, epoch, logs)
                if session is not None:
                    session.save(self, epoch + 1, history)
                if self.stop_training:
                    history.stopped_at = {"epoch": epoch + 1, "step": done}
                    break
        except KeyboardInterrupt:
            history.interrupted = True
            history.stopped_at = {"epoch": epoch + 1, "step": done}
            if verbose:
                print(
                    f"interrupted at epoch {epoch + 1}, step {done}: the model keeps the "
                    f"weights of that step",
                    file=sys.stderr,
                )
        except NonFiniteLossError:
            history.stopped_at = {"epoch": epoch + 1, "step": done}
            raise
        finally:
            if tracker is not None:
                tracker.close()
            model.set_reuse(False)
            if bar is not None:
                bar.close()
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            self._interrupt_requested = False
        self._call(callbacks, "on_train_end", self, history)
        return history

    @staticmethod
    def _read_tracker(tracker, epoch):
        """(loss sum, correct) from a device backend's running metrics; NonFiniteLossError
        naming the step when a loss became non-finite (its update and later ones skipped)."""
        loss_sum, correct, bad_step = tracker.read()
        if bad_step:
            raise NonFiniteLossError(
                f"loss became non-finite at epoch {epoch + 1}, step "
                f"{bad_step} (the model keeps the weights from before "
                f"this step)"
            )
        return loss_sum, correct

    @staticmethod
    def _check_running_loss(loss_sum, epoch, checked_at, done):
        """Fetch the running loss sum (a sync on a device); error if it became non-finite."""
        if not math.isfinite(float(loss_sum)):
            raise NonFiniteLossError(
                f"loss became non-finite at epoch {epoch + 1}, at a step "
                f"from {checked_at + 1} to {done}"
            )

    @staticmethod
    def _call(callbacks, hook, *args):
        for c in callbacks:
            method = getattr(c, hook, None)
            if method is not None:
                method(*args)

    @staticmethod
    def epoch_line(epoch, epochs, logs):
        """The line fit prints after an epoch: at most 100 columns for up to 999 epochs of up
        to a day each, any loss, up to 1e9 samples/s."""

        def loss(value):  # a diverging loss in 7 characters
            return f"{value:.4f}" if abs(value) < 100 else f"{value:.1e}"

        text = f"epoch {epoch + 1}/{epochs}  loss {loss(logs['loss'])} acc {logs['accuracy']:.4f}"
        if "val_loss" in logs:
            text += f"  val_loss {loss(logs['val_loss'])} val_acc {logs['val_accuracy']:.4f}"
        seconds, rate = logs["epoch_time"], logs["samples_per_s"]
        seconds = (
            f"{seconds:.2f}"
            if seconds < 100
            else f"{seconds:.1f}"
            if seconds < 1000
            else f"{seconds:,.0f}"
        )
        rate = f"{rate:,.0f}" if rate < 1e6 else f"{rate / 1e6:.3g}M"
        return f"{text}  {seconds} s  {rate} samples/s"

    @staticmethod
    def _print_epoch(epoch, epochs, logs, progress):
        text = Trainer.epoch_line(epoch, epochs, logs)
        if progress:
            tqdm.write(text)
        else:
            print(text, flush=True)
