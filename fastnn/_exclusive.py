"""One training at a time per model and per optimizer.

Training writes a model's weights, gradients and kept buffers and an optimizer's state in
place; two threads doing that to the same objects at once would silently corrupt them. So
`Trainer.fit` and `Trainer.train_step` claim the model and the optimizer first: a claim by
another thread is refused at once with ConcurrentTrainingError (never waited for, so a mistake
cannot deadlock). The same thread may claim again (a callback calling train_step). Separate
models with separate optimizers train in parallel freely; inference does not claim.

A model is not given a lock attribute (it would stop models from pickling and copying): the
claims live here, keyed by id(), held only while the objects are alive and in use.
"""

import contextlib
import threading


class ConcurrentTrainingError(RuntimeError):
    """The model or optimizer is being trained by another thread."""


_lock = threading.Lock()
_claims = {}  # id(object) -> [owning thread's ident, claim depth]


def _claim(objects):
    me = threading.get_ident()
    with _lock:
        for what, obj in objects:
            owner = _claims.get(id(obj))
            if owner is not None and owner[0] != me:
                raise ConcurrentTrainingError(
                    f"this {what} is being trained by another thread; train one model from "
                    f"one thread at a time (separate models, each with its own optimizer, "
                    f"can train in parallel)"
                )
        for _, obj in objects:
            _claims.setdefault(id(obj), [me, 0])[1] += 1


def _release(objects):
    with _lock:
        for _, obj in objects:
            claim = _claims[id(obj)]
            claim[1] -= 1
            if not claim[1]:
                del _claims[id(obj)]


@contextlib.contextmanager
def training(model, optimizer):
    """Hold `model` and `optimizer` for this thread's training inside the block."""
    objects = (("model", model), ("optimizer", optimizer))
    _claim(objects)
    try:
        yield
    finally:
        _release(objects)
