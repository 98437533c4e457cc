"""Build tests/cuda/harness (harness.cpp + fastnn's installed .cu kernels) with g++ and run its
kernels from Python, in the shape CuPy gives them: `load_module(family).get_function(name)`
returns something called as `function(grid, block, args)`.

Every array argument is copied into a buffer with poisoned guard zones on both sides; after the
launch the guards must be intact (no out-of-bounds write) and the copy goes back. Arrays the
backend allocates come from `PoisonedNumpy.empty`, so reading memory no kernel wrote gives NaN.
"""

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from fastnn.backends.cuda import kernels, sources

HERE = Path(__file__).resolve().parent
GUARD = 64  # elements of poison on each side of every array argument
_POISON_BITS = {4: 0x7FA5A5A5, 8: 0x7FA5A5A5A5A5A5A5}  # NaN payloads / huge ints


def compiler():
    return os.environ.get("CXX") or shutil.which("g++")


class Build:
    """A g++ build of the harness with the kernels of `families` (from the installed package,
    or from `kernel_dir`, e.g. a deliberately broken copy), started in the background;
    `.result()` waits and returns the shared library's path."""

    def __init__(self, out_dir, sanitize=None, kernel_dir=None, families=sources.FAMILIES):
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        kernel_dir = Path(kernel_dir or sources.KERNEL_DIR)
        names = [name for name, (family, _) in kernels.signatures().items() if family in families]
        (out_dir / "kernel_list.inc").write_text(
            "".join(f'#include "{family}.cu"\n' for family in families)
        )
        (out_dir / "kernel_entries.inc").write_text(
            "".join(f"FASTNN_ENTRY({name}),\n" for name in names)
        )
        self.library = out_dir / f"libfastnn_harness{'_' + sanitize if sanitize else ''}.so"
        self.command = [
            compiler(),
            "-std=c++20",
            "-O1",
            "-fPIC",
            "-shared",
            "-pthread",
            "-Wall",
            "-Wextra",
            "-Werror",
            f"-I{HERE}",
            f"-I{kernel_dir}",
            f"-I{out_dir}",
            str(HERE / "harness.cpp"),
            "-o",
            str(self.library),
        ]
        if sanitize:  # line tables make the race reports point at kernel source lines
            self.command += [f"-fsanitize={sanitize}", "-g1", "-fno-omit-frame-pointer"]
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )

    def result(self):
        output, _ = self.process.communicate()
        if self.process.returncode != 0:
            raise RuntimeError(f"harness build failed:\n{' '.join(self.command)}\n{output}")
        return self.library


def build(out_dir, sanitize=None, kernel_dir=None, families=sources.FAMILIES):
    """Build and wait; returns the shared library's path."""
    return Build(out_dir, sanitize, kernel_dir, families).result()


def poison(dtype):
    dtype = np.dtype(dtype)
    bits = _POISON_BITS[dtype.itemsize]
    return np.array([bits], dtype=f"u{dtype.itemsize}").view(dtype)[0]


class PoisonedNumpy:
    """NumPy, except that `empty` and `empty_like` return arrays full of poison (NaN for floats)."""

    __name__ = "numpy"

    def __getattr__(self, name):
        return getattr(np, name)

    def empty(self, shape, dtype=np.float64):
        return np.full(shape, poison(dtype), dtype=dtype)

    def empty_like(self, a, dtype=None):
        return self.empty(np.shape(a), a.dtype if dtype is None else dtype)


class HostLibrary:
    def __init__(self, path):
        self.path = Path(path)
        self.lib = ctypes.CDLL(str(path))
        self.lib.fastnn_harness_signature.argtypes = [
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_int,
        ]
        self.lib.fastnn_harness_launch.argtypes = [
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.POINTER(ctypes.c_uint),
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_char_p,
            ctypes.c_int,
        ]

    def signature(self, name):
        """The kernel's parameter types as g++ sees them, e.g. ('float*', 'const float*', 'int')."""
        out = ctypes.create_string_buffer(1024)
        if self.lib.fastnn_harness_signature(name.encode(), out, len(out)) != 0:
            return None
        return tuple(out.value.decode().split(","))

    def load_module(self, family):
        return self  # one library holds every family's kernels

    def get_function(self, name):
        return HostFunction(self, name)


class HostFunction:
    def __init__(self, library, name):
        self.library = library
        self.name = name

    def __call__(self, grid, block, args, shared_mem=0):
        if shared_mem:
            raise ValueError("the kernels use no dynamic shared memory")
        grid = tuple(grid) if isinstance(grid, tuple) else (grid,)
        block = tuple(block) if isinstance(block, tuple) else (block,)
        grid3 = (ctypes.c_uint * 3)(*(grid + (1,) * (3 - len(grid))))
        block3 = (ctypes.c_uint * 3)(*(block + (1,) * (3 - len(block))))
        guarded = {}  # data pointer -> (original, padded copy); aliases share one copy
        keep = []
        pointers = (ctypes.c_void_p * len(args))()
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray):
                key = a.__array_interface__["data"][0]
                if key not in guarded:
                    padded = np.full(a.size + 2 * GUARD, poison(a.dtype), dtype=a.dtype)
                    padded[GUARD : GUARD + a.size] = a.ravel()
                    guarded[key] = (a, padded)
                padded = guarded[key][1]
                value = ctypes.c_void_p(padded.ctypes.data + GUARD * a.itemsize)
            elif isinstance(a, np.float32):
                value = ctypes.c_float(a)
            elif isinstance(a, np.int32):
                value = ctypes.c_int32(a)
            elif isinstance(a, np.int64):
                value = ctypes.c_int64(a)
            else:
                raise TypeError(
                    f"{self.name}: argument {i} has unsupported type {type(a).__name__}"
                )
            keep.append(value)
            pointers[i] = ctypes.addressof(value)
        message = ctypes.create_string_buffer(1024)
        status = self.library.lib.fastnn_harness_launch(
            self.name.encode(), grid3, block3, pointers, message, len(message)
        )
        if status != 0:
            raise RuntimeError(f"{self.name}: {message.value.decode()}")
        for original, padded in guarded.values():
            for side, zone in (
                ("before", padded[:GUARD]),
                ("after", padded[GUARD + original.size :]),
            ):
                if (
                    zone.tobytes()
                    != np.full(GUARD, poison(original.dtype), original.dtype).tobytes()
                ):
                    raise AssertionError(
                        f"{self.name} wrote out of bounds {side} an argument "
                        f"of shape {original.shape}"
                    )
            original.reshape(-1)[...] = padded[GUARD : GUARD + original.size]


def host_backend(library, threads=256, max_blocks=8192):
    """The real CudaBackend code, on NumPy arrays, with the kernels running in the harness."""
    from fastnn.backends.cuda import launch
    from fastnn.backends.cuda.backend import CudaBackend

    table = kernels.Kernels(launch.HOST, load_module=library.load_module)
    backend = CudaBackend(threads=threads, _xp=PoisonedNumpy(), _kernels=table)
    backend.max_blocks = max_blocks
    return backend
