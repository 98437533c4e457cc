"""The default build carries no debug information (Python's CFLAGS add -g; setup.py turns it
off unless FASTNN_DEBUG=1) and shares Cython's utility code in one module."""

import os
import struct
from pathlib import Path

import pytest

kernels = pytest.importorskip("fastnn._kernels.runtime", reason="compiled kernels not built")
KERNEL_DIR = Path(kernels.__file__).parent


def elf_section_names(path):
    """Section names of an ELF64 little-endian file, or None for another format."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i):
        return struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)

    strtab = header(shstrndx)
    names_at, names_size = strtab[4], strtab[5]
    names = data[names_at : names_at + names_size]
    return [names[header(i)[0] : names.index(b"\0", header(i)[0])].decode() for i in range(shnum)]


def modules():
    found = sorted(KERNEL_DIR.glob("*.so"))
    if not found:
        pytest.skip("no .so files (not an ELF platform)")
    return found


@pytest.mark.skipif(
    os.environ.get("FASTNN_DEBUG", "0") not in ("", "0"), reason="FASTNN_DEBUG builds keep -g"
)
def test_no_debug_information_in_the_kernels():
    for path in modules():
        names = elf_section_names(path)
        if names is None:
            pytest.skip(f"{path.name} is not ELF64")
        assert ".text" in names, path.name
        assert not [n for n in names if n.startswith(".debug_")], path.name


def test_cython_utility_code_is_shared():
    names = {path.name.split(".")[0] for path in modules()}
    assert "_cyutility" in names and {"dense", "conv", "gemm"} <= names
