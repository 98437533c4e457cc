"""The one random stream behind initialization, splits, shuffling and dropout.

`fastnn.seed(n)` replaces it, so a single call makes a whole run repeatable: every draw fastnn
makes comes from this Generator, in program order. Checkpoints save and restore its state with
`get_state()` / `set_state()`.

Device backends (CuPy) draw dropout masks from their own generator, seeded once from this stream
the first time it is needed after each `seed()`, so masks never travel over the bus.
"""
import numbers

import numpy as np

_generator = np.random.default_rng()
# id(xp module) -> that array library's generator, derived from _generator
_device_generators = {}


def seed(n: int) -> None:
    """Seed fastnn's random stream: initialization, splits, shuffling and dropout all follow."""
    global _generator
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"seed must be >= 0, got {n}")
    _generator = np.random.default_rng(int(n))
    _device_generators.clear()


def generator():
    """The current numpy Generator (replaced by every `seed()` call)."""
    return _generator


def get_state():
    """The stream's state as a JSON-friendly dict (for checkpoints)."""
    return _generator.bit_generator.state


def set_state(state):
    """Restore a state from `get_state()`."""
    global _generator
    _generator = np.random.Generator(_bit_generator(state))
    _device_generators.clear()


def check_state(state):
    """ValueError unless `state` is one set_state() accepts (nothing is changed)."""
    _bit_generator(state)


def _bit_generator(state):
    if not isinstance(state, dict) or "bit_generator" not in state:
        raise ValueError("random state must be a dict from fastnn's get_state()")
    name = state["bit_generator"]
    bit_generator_cls = getattr(np.random, str(name), None)
    if not isinstance(bit_generator_cls, type) or not issubclass(bit_generator_cls,
                                                               np.random.BitGenerator):
        raise ValueError(f"unknown bit generator {name!r} in random state")
    bit_generator = bit_generator_cls()
    try:
        bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"invalid random state: {exc}") from None
    return bit_generator


def uniform(xp, shape, dtype):
    """Uniform [0, 1) samples of `shape` as an `xp` array, drawn from fastnn's stream."""
    if xp is np:
        return _generator.random(shape, dtype=dtype)
    rng = _device_generators.get(id(xp))
    if rng is None:
        rng = xp.random.default_rng(int(_generator.integers(2**63)))
        _device_generators[id(xp)] = rng
    return rng.random(shape, dtype=dtype)
