"""Training callbacks: hooks the Trainer calls around epochs and steps.

Subclass Callback and override what you need; any object with some of these methods works
too. `on_batch_end` runs after every step, so it is only called when a callback defines it.
A callback stops training after the current step with `trainer.stop_training = True`; raising
KeyboardInterrupt from a hook stops it the same way a Ctrl-C does.
"""

import math

__all__ = ["Callback", "LambdaCallback", "EarlyStopping"]

HOOKS = ("on_train_begin", "on_epoch_begin", "on_batch_end", "on_epoch_end", "on_train_end")


class Callback:
    def on_train_begin(self, trainer):
        pass

    def on_epoch_begin(self, trainer, epoch):
        """`epoch` counts from 0."""

    def on_batch_end(self, trainer, epoch, step, loss):
        """`loss` is the step's mean loss as a backend scalar (float() on a GPU synchronizes)."""

    def on_epoch_end(self, trainer, epoch, logs):
        """`logs`: this epoch's loss, accuracy, val_loss, val_accuracy, epoch_time, ..."""

    def on_train_end(self, trainer, history):
        pass


def defines(callback, hook):
    """Whether `callback` does something in `hook` (base-class no-ops do not count)."""
    if hook in getattr(callback, "__dict__", {}):
        return callable(callback.__dict__[hook])
    method = getattr(type(callback), hook, None)
    if method is None:
        return callable(getattr(callback, hook, None))
    return method is not getattr(Callback, hook, None)


class LambdaCallback(Callback):
    """Callback from plain functions: LambdaCallback(on_epoch_end=lambda t, e, logs: ...)."""

    def __init__(self, **hooks):
        for name, fn in hooks.items():
            if name not in HOOKS:
                raise ValueError(f"unknown hook {name!r}; expected one of {HOOKS}")
            if not callable(fn):
                raise TypeError(f"{name} must be callable")
            setattr(self, name, fn)


class EarlyStopping(Callback):
    """Stop when `monitor` (default val_loss) has not improved by more than `min_delta` for
    `patience` epochs in a row (Keras semantics: patience=2 stops two epochs after the best);
    with restore_best, put back the weights of the best epoch when it stops. With verbose
    (default), it prints one line when it stops and one when it restores the weights.

    After fit, `best` is the best monitored value, `best_epoch` its epoch (from 0) and
    `stopped_epoch` the epoch (from 0) after which it stopped training, or None.
    """

    def __init__(
        self, monitor="val_loss", patience=3, min_delta=0.0, restore_best=True, verbose=True
    ):
        if monitor not in ("loss", "accuracy", "val_loss", "val_accuracy"):
            raise ValueError(
                f"monitor must be loss, accuracy, val_loss or val_accuracy, got {monitor!r}"
            )
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        self.monitor, self.patience = monitor, patience
        self.min_delta = float(min_delta)
        if not math.isfinite(self.min_delta) or self.min_delta < 0:
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta!r}")
        self.restore_best = bool(restore_best)
        self.verbose = bool(verbose)
        self._sign = 1.0 if monitor.endswith("loss") else -1.0
        self.best = self.best_epoch = self.stopped_epoch = None

    def on_train_begin(self, trainer):
        self._best_score, self.best, self.best_epoch, self.wait = math.inf, None, None, 0
        self.stopped_epoch, self._best_state = None, None

    def on_epoch_end(self, trainer, epoch, logs):
        value = logs.get(self.monitor)
        if value is None:
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r}, which this fit does not "
                f"record (no validation data?)"
            )
        score = self._sign * value
        if score < self._best_score - self.min_delta:
            self._best_score, self.best, self.best_epoch, self.wait = score, value, epoch, 0
            if self.restore_best:
                self._best_state = trainer.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.stop_training = True
            self.stopped_epoch = epoch
            if self.verbose:
                print(
                    f"early stop after epoch {epoch + 1}: {self.monitor} has not improved "
                    f"for {self.wait} epoch{'s' if self.wait != 1 else ''} (best "
                    f"{self.best:.4f} at epoch {self.best_epoch + 1})",
                    flush=True,
                )

    def on_train_end(self, trainer, history):
        if self.restore_best and self._best_state is not None and self.stopped_epoch is not None:
            trainer.model.load_state_dict(self._best_state)
            if self.verbose:
                print(
                    f"restored the weights of epoch {self.best_epoch + 1} "
                    f"({self.monitor} {self.best:.4f})",
                    flush=True,
                )
