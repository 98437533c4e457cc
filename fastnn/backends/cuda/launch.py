"""Checked kernel launches.

CuPy's RawKernel checks nothing: a float64 array, a strided view, an array on another device or
a Python int (passed as 64 bits where the kernel reads 32) all run and give garbage or a crash.
So every launch goes through `Kernel`, which knows the kernel's C signature (parsed from the .cu
source) and checks each argument against it before the launch.
"""

import operator
import re
from dataclasses import dataclass

import numpy as np

# C parameter type (without const) -> NumPy dtype. Pointers are arrays, the rest scalars.
_C_TYPES = {
    "float": np.dtype(np.float32),
    "int": np.dtype(np.int32),
    "long long": np.dtype(np.int64),
}
MAX_BLOCK_THREADS = 1024
_MAX_GRID = (2**31 - 1, 65535, 65535)

_KERNEL = re.compile(
    r'extern\s+"C"\s+__global__\s+void\s+(?:__launch_bounds__\s*\(\s*(\w+)\s*\)\s+)?'
    r"(\w+)\s*\(([^)]*)\)"
)
_DEFINE = re.compile(r"^[ \t]*#[ \t]*define[ \t]+(\w+)[ \t]+(\d+)[ \t]*$", re.MULTILINE)
_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)
_PARAM = re.compile(r"^(const\s+)?(float|int|long\s+long)\s*(\*)?\s*(?:__restrict__\s+)?(\w+)$")


@dataclass(frozen=True)
class Param:
    name: str
    dtype: np.dtype
    pointer: bool
    const: bool = False

    @property
    def ctype(self):
        """The C type as a compiler names it (top-level const and __restrict__ dropped)."""
        base = {v: k for k, v in _C_TYPES.items()}[self.dtype]
        return f"{'const ' if self.const else ''}{base}*" if self.pointer else base


@dataclass(frozen=True)
class Signature:
    name: str
    params: tuple
    max_threads: int = MAX_BLOCK_THREADS


def parse_signatures(source):
    """{kernel name: Signature} for every `extern "C" __global__` kernel in a .cu source."""
    source = _COMMENT.sub(" ", source)
    defines = {name: int(value) for name, value in _DEFINE.findall(source)}
    kernels = {}
    for bound, name, params_text in _KERNEL.findall(source):
        params = []
        for raw in params_text.split(","):
            text = " ".join(raw.split())
            match = _PARAM.match(text)
            if match is None:
                raise ValueError(
                    f"kernel {name}: cannot parse parameter {text!r} (see the "
                    f"signature rules in kernels/common.cuh)"
                )
            const, ctype, star, pname = match.groups()
            ctype = " ".join(ctype.split())
            params.append(Param(pname, _C_TYPES[ctype], bool(star), bool(const and star)))
        if bound:
            max_threads = int(bound) if bound.isdigit() else defines.get(bound)
            if max_threads is None:
                raise ValueError(f"kernel {name}: unknown launch bound {bound}")
        else:
            max_threads = MAX_BLOCK_THREADS
        if name in kernels:
            raise ValueError(f"kernel {name} is defined twice")
        kernels[name] = Signature(name, tuple(params), max_threads)
    return kernels


@dataclass(frozen=True)
class ArraySpace:
    """Where a kernel's arrays must live: their type, and the device each is on versus the
    device the kernel is launched on (both None on the host)."""

    array_type: type
    device_of: object = lambda a: None
    current_device: object = lambda: None


HOST = ArraySpace(np.ndarray)


def cupy_space(cupy):
    return ArraySpace(cupy.ndarray, lambda a: a.device.id, lambda: cupy.cuda.Device().id)


def _dims(what, value, limits):
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    if not isinstance(value, tuple) or not 1 <= len(value) <= 3:
        raise TypeError(f"{what} must be an int or a tuple of 1 to 3 ints, got {value!r}")
    dims = []
    for v, limit in zip(value, limits):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{what} must hold ints, got {value!r}")
        if not 1 <= v <= limit:
            raise ValueError(f"{what} sizes must be in [1, {limit}], got {value!r}")
        dims.append(int(v))
    return tuple(dims) + (1,) * (3 - len(dims))


class Kernel:
    """A compiled kernel (anything called as `function(grid, block, args)`, like a CuPy
    RawKernel) with the signature it was declared with; calling it checks, then launches."""

    def __init__(self, signature, function, space):
        self.signature = signature
        self.function = function
        self.space = space

    @property
    def name(self):
        return self.signature.name

    def __call__(self, grid, block, *args):
        self.function(*self.check(grid, block, args))

    def check(self, grid, block, args):
        """(grid, block, converted args) for this launch, or TypeError/ValueError saying why not."""
        sig = self.signature
        grid = _dims(f"{sig.name}: grid", grid, _MAX_GRID)
        block = _dims(f"{sig.name}: block", block, (MAX_BLOCK_THREADS, MAX_BLOCK_THREADS, 64))
        threads = block[0] * block[1] * block[2]
        if threads > sig.max_threads:
            raise ValueError(
                f"{sig.name}: block of {threads} threads exceeds its launch bound "
                f"of {sig.max_threads}"
            )
        if len(args) != len(sig.params):
            raise TypeError(
                f"{sig.name} takes {len(sig.params)} arguments "
                f"({', '.join(p.name for p in sig.params)}), got {len(args)}"
            )
        device = self.space.current_device()
        converted = tuple(self._argument(p, a, device) for p, a in zip(sig.params, args))
        return grid, block, converted

    def _argument(self, param, value, device):
        where = f"{self.signature.name}: argument {param.name!r}"
        if param.pointer:
            kind = self.space.array_type
            if not isinstance(value, kind):
                raise TypeError(
                    f"{where} must be a {kind.__module__}.{kind.__name__} "
                    f"({param.ctype}), got {type(value).__name__}"
                )
            if value.dtype != param.dtype:
                raise TypeError(
                    f"{where} must be {param.dtype.name} ({param.ctype}), got {value.dtype.name}"
                )
            if not value.flags.c_contiguous:
                raise ValueError(f"{where} must be C-contiguous")
            if self.space.device_of(value) != device:
                raise ValueError(
                    f"{where} is on device {self.space.device_of(value)} but the "
                    f"kernel runs on device {device}"
                )
            return value
        if param.dtype.kind == "f":
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise TypeError(
                    f"{where} must be a real number ({param.ctype}), got {type(value).__name__}"
                )
            return param.dtype.type(value)
        if isinstance(value, (bool, np.bool_)):
            value = int(value)  # flags are ints in C
        try:
            value = operator.index(value)
        except TypeError:
            raise TypeError(
                f"{where} must be an integer ({param.ctype}), got {type(value).__name__}"
            ) from None
        info = np.iinfo(param.dtype)
        if not info.min <= value <= info.max:
            raise ValueError(f"{where} = {value} does not fit in {param.ctype}")
        return param.dtype.type(value)
