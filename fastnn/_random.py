"""The random streams behind initialization, splits, shuffling and dropout.

`fastnn.seed(n)` reseeds the process-wide stream, so a single call makes a whole
single-threaded run repeatable: every draw fastnn makes comes from that Generator, in program
order. Checkpoints save and restore the current stream's state with `get_state()` /
`set_state()`.

Threads: draws from several threads on one stream interleave in whatever order the threads
run, so a run that shares the process-wide stream with another thread is not repeatable. A
`Trainer(..., seed=n)` or `Sequential(..., seed=n)` owns a `Stream` of its own, and makes it the
current stream of the thread that is training or initializing (`using`): its split, shuffle,
dropout masks and initial weights then follow that seed whatever other threads draw. The
current stream is per thread (threading.local); a thread without one uses the process-wide
stream.

Device backends (CuPy) draw dropout masks from their own generator, seeded once from the
current stream the first time it is needed after each reseed, so masks never travel over the
bus.
"""

import contextlib
import numbers
import threading

import numpy as np


class Stream:
    """A numpy Generator and the device generators derived from it (id(xp) -> generator)."""

    __slots__ = ("device_generators", "generator")

    def __init__(self, generator):
        self.generator = generator
        self.device_generators = {}

    @classmethod
    def from_seed(cls, n):
        return cls(np.random.default_rng(check_seed(n)))

    def replace(self, generator):
        self.generator = generator
        self.device_generators = {}


_process_stream = Stream(np.random.default_rng())
_current = threading.local()  # .stream: this thread's Stream while `using` one


def check_seed(n, name="seed"):
    """n as an int >= 0, else TypeError/ValueError naming `name`."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return int(n)


def _stream():
    return getattr(_current, "stream", None) or _process_stream


@contextlib.contextmanager
def using(stream):
    """Make `stream` this thread's current stream inside the block (blocks nest)."""
    previous = getattr(_current, "stream", None)
    _current.stream = stream
    try:
        yield stream
    finally:
        _current.stream = previous


def seed(n: int) -> None:
    """Seed fastnn's process-wide random stream: initialization, splits, shuffling and dropout
    all follow, in every thread that has no stream of its own (see Trainer's `seed=`)."""
    _process_stream.replace(np.random.default_rng(check_seed(n)))


def generator():
    """The current numpy Generator of this thread (replaced by every `seed()` call)."""
    return _stream().generator


def get_state():
    """The current stream's state as a JSON-friendly dict (for checkpoints)."""
    return _stream().generator.bit_generator.state


def set_state(state):
    """Restore a state from `get_state()` into the current stream."""
    _stream().replace(np.random.Generator(_bit_generator(state)))


def check_state(state):
    """ValueError unless `state` is one set_state() accepts (nothing is changed)."""
    _bit_generator(state)


def _bit_generator(state):
    if not isinstance(state, dict) or "bit_generator" not in state:
        raise ValueError("random state must be a dict from fastnn's get_state()")
    name = state["bit_generator"]
    bit_generator_cls = getattr(np.random, str(name), None)
    if not isinstance(bit_generator_cls, type) or not issubclass(
        bit_generator_cls, np.random.BitGenerator
    ):
        raise ValueError(f"unknown bit generator {name!r} in random state")
    bit_generator = bit_generator_cls()
    try:
        bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"invalid random state: {exc}") from None
    return bit_generator


def uniform(xp, shape, dtype):
    """Uniform [0, 1) samples of `shape` as an `xp` array, drawn from the current stream."""
    stream = _stream()
    if xp is np:
        return stream.generator.random(shape, dtype=dtype)
    rng = stream.device_generators.get(id(xp))
    if rng is None:
        rng = xp.random.default_rng(int(stream.generator.integers(2**63)))
        stream.device_generators[id(xp)] = rng
    return rng.random(shape, dtype=dtype)
