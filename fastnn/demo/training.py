"""Training from the page: one run at a time in a background thread, its progress kept as a
list of events that any number of server-sent-event streams (one per tab) replay and follow.

A run builds a new model and trains it; the served model is untouched until the run finishes,
then replaced in one assignment, so predictions never see a half-trained network. Cancel asks
the trainer to stop after the current step and keeps the model that was being served.
"""

import threading

from . import models
from .models import STEP_EVENTS_PER_EPOCH, Cancelled, train_recipe  # noqa: F401 (re-exported)


class TrainingHub:
    """The one training run (or none) and its event log. `on_model` receives each newly
    trained ServedModel."""

    def __init__(self, on_model):
        self._on_model = on_model
        self._cond = threading.Condition()
        self._generation = 0  # increments with every run; streams restart their replay
        self._events = []  # events of the current (or last) run
        self._thread = None
        self._cancel = threading.Event()
        self.closed = False

    @property
    def running(self):
        thread = self._thread
        return thread is not None and thread.is_alive()

    def start(self, recipe):
        """Start a run; False when one is already running."""
        with self._cond:
            if self.closed or self.running:
                return False
            self._generation += 1
            self._events = []
            self._cancel = threading.Event()
            self._thread = threading.Thread(
                target=self._run,
                args=(recipe, self._cancel, self._generation),
                name="fastnn-demo-training",
                daemon=True,
            )
            self._emit(
                {
                    "type": "start",
                    "run": self._generation,
                    "recipe": recipe,
                    "description": models.describe_recipe(recipe),
                }
            )
            self._thread.start()
            return True

    def cancel(self):
        """Ask the running run to stop; False when none is running."""
        with self._cond:
            if not self.running:
                return False
            self._cancel.set()
            return True

    def close(self, timeout=10.0):
        """Cancel any run, wake every stream so it ends, and wait for the run to stop."""
        with self._cond:
            self.closed = True
            self._cancel.set()
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)

    def _emit(self, event, generation=None):
        with self._cond:
            if generation is not None and generation != self._generation:
                return
            self._events.append(event)
            self._cond.notify_all()

    def _run(self, recipe, cancel, generation):
        def emit(event):
            self._emit(event, generation)

        try:
            model, accuracy = train_recipe(recipe, emit=emit, cancel=cancel)
            served = models.ServedModel(
                model, "trained here: " + models.describe_recipe(recipe), accuracy
            )
            self._on_model(served)
            emit({"type": "done", "test_accuracy": accuracy, "model": served.info()})
        except Cancelled:
            emit({"type": "cancelled"})
        except Exception as exc:  # noqa: BLE001 (a NaN loss, say: the page shows any failure)
            emit({"type": "error", "error": f"{type(exc).__name__}: {exc}"})

    def follow(self, position, timeout):
        """(generation, events after `position`, closed) once there is something new or
        `timeout` s passed; `position` is (generation, count of events already seen)."""
        generation, seen = position
        with self._cond:
            self._cond.wait_for(
                lambda: self.closed or self._generation != generation or len(self._events) > seen,
                timeout,
            )
            if self._generation != generation:
                seen = 0
            return self._generation, self._events[seen:], self.closed

    def state(self):
        with self._cond:
            return {"running": self.running, "run": self._generation, "events": len(self._events)}
