"""The CUDA kernel sources shipped in kernels/, and how they are compiled.

Each op family is one .cu file. Before compiling, `#include "x.cuh"` lines are replaced by the
header's text, so the source handed to NVRTC is self-contained: CuPy's kernel cache is keyed by
the source text, and a changed header must change that key.
"""

import re
from functools import cache
from pathlib import Path

KERNEL_DIR = Path(__file__).with_name("kernels")
FAMILIES = ("dense", "conv", "pool", "loss", "optim", "data", "norm")

# The NVRTC options CuPy's RawModule compiles with, besides its -I include directories and
# `-arch=sm_XY` for the device. Checked against CuPy's own compile path for the CuPy version
# pinned in pyproject's test extra (tests/cuda/test_cuda_compile.py).
CHECKED_CUPY_VERSION = "14.2.0"
CUPY_NVRTC_OPTIONS = ("--std=c++17", "-ftz=true", "--device-as-default-execution-space")
# GPU architectures every kernel is compile-checked for (A100, H100).
CHECKED_ARCHS = ("80", "90")

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)


def path(family):
    if family not in FAMILIES:
        raise ValueError(f"unknown kernel family {family!r}; expected one of {FAMILIES}")
    return KERNEL_DIR / f"{family}.cu"


@cache
def source(family):
    """The family's .cu text with its local headers pasted in (each at most once)."""
    seen = set()

    def expand(match):
        name = match.group(1)
        if name in seen:
            return f"// {name} already included"
        seen.add(name)
        header = KERNEL_DIR / name
        if not header.is_file():
            raise FileNotFoundError(
                f"{path(family).name} includes {name}, not found in {KERNEL_DIR}"
            )
        return _INCLUDE.sub(expand, header.read_text())

    return _INCLUDE.sub(expand, path(family).read_text())
