"""Every kernel in kernels/*.cu by name, each wrapped in a checked `launch.Kernel`.

A family's module is compiled on first use of one of its kernels, once per process: with CuPy
that is a `cupy.RawModule` (NVRTC, cached on disk by CuPy); the tests pass a loader that
builds the same sources for the CPU instead (tests/cuda/harness).
"""

import threading

from . import launch, sources

_raw_modules = {}
_lock = threading.Lock()


def raw_module(family):
    """The process-wide cupy.RawModule of a kernel family (compiled lazily by CuPy)."""
    with _lock:
        if family not in _raw_modules:
            import cupy

            _raw_modules[family] = cupy.RawModule(code=sources.source(family))
        return _raw_modules[family]


def signatures():
    """{kernel name: (family, launch.Signature)} over every family."""
    found = {}
    for family in sources.FAMILIES:
        for name, sig in launch.parse_signatures(sources.source(family)).items():
            if name in found:
                raise ValueError(f"kernel {name} is defined in {found[name][0]} and {family}")
            found[name] = (family, sig)
    return found


class Kernels:
    """Kernels by attribute: `kernels.bias_act(grid, block, y, b, ...)`."""

    def __init__(self, space, load_module=raw_module):
        self._space = space
        self._load_module = load_module
        self._signatures = signatures()
        self._modules = {}
        self._wrapped = {}

    def names(self):
        return tuple(self._signatures)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        wrapped = self._wrapped.get(name)
        if wrapped is None:
            if name not in self._signatures:
                raise AttributeError(f"no CUDA kernel named {name!r}")
            family, sig = self._signatures[name]
            if family not in self._modules:
                self._modules[family] = self._load_module(family)
            function = self._modules[family].get_function(name)
            wrapped = self._wrapped[name] = launch.Kernel(sig, function, self._space)
        return wrapped
