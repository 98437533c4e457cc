"""Backend registry: `get(name)` returns a backend, `available()` says which can run here.

Backends are imported lazily, so `import fastnn` never imports CuPy, and a backend that cannot
run here (no compiled kernels, no CuPy, no GPU) says why instead of failing at import.
"""

import importlib
import threading
from dataclasses import dataclass

from .base import Backend

# name -> (module, class). Each module also has probe() -> None or the reason it cannot run.
_KNOWN = {
    "numpy": ("fastnn.backends.numpy", "NumpyBackend"),
    "cpu": ("fastnn.backends.cpu", "CpuBackend"),
    "cuda": ("fastnn.backends.cuda", "CudaBackend"),
}
_instances = {}
_instances_lock = threading.Lock()  # one instance per name, even when threads ask at once


class BackendUnavailable(RuntimeError):
    """The backend exists but cannot run on this machine; the message says why."""


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""

    def __bool__(self):
        return self.ok


def names():
    return tuple(_KNOWN)


def _probe(name):
    module_name, _ = _KNOWN[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        return None, f"{module_name} could not be imported: {exc}"
    reason = module.probe()
    return module, reason


def available():
    """{name: Availability} for every known backend (truthy when it can run here)."""
    result = {}
    for name in _KNOWN:
        if name in _instances:
            result[name] = Availability(True)
            continue
        _, reason = _probe(name)
        result[name] = Availability(reason is None, reason or "")
    return result


def get(name):
    """The backend called `name` ("numpy", "cpu" or "cuda"), or a backend object passed through."""
    if not isinstance(name, str):
        if isinstance(name, Backend):
            return name
        raise TypeError(f"backend must be one of {sorted(_KNOWN)}, got {name!r}")
    if name not in _KNOWN:
        raise ValueError(f"unknown backend {name!r}; expected one of {sorted(_KNOWN)}")
    backend = _instances.get(name)
    if backend is None:
        with _instances_lock:
            backend = _instances.get(name)
            if backend is None:
                module, reason = _probe(name)
                if reason is not None:
                    raise BackendUnavailable(f"backend {name!r} is unavailable: {reason}")
                backend = _instances[name] = getattr(module, _KNOWN[name][1])()
    return backend
