"""Datasets: MNIST (shipped with the package), any IDX file or directory, splits and batches.

IDX is the format of MNIST, Fashion-MNIST and KMNIST: a 4-byte magic (two zero bytes, a type
code, the number of dimensions), one big-endian uint32 per dimension, then the data, big-endian,
row-major. Files may be raw or gzip-compressed; ``load_idx`` tells them apart by their first bytes.

Every header is checked before anything is allocated from it, so a corrupt or hostile file gets a
ValueError naming the file, never a crash or an attempt to allocate gigabytes.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import numbers
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterator
from typing import Any, Union

import numpy as np

from . import validation

__all__ = [
    "mnist",
    "load_idx",
    "load_idx_dir",
    "train_val_split",
    "batches",
    "to_float",
    "UnscaledPixelsWarning",
]

# IDX type code -> big-endian dtype of the data that follows the header.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MAX_DIMS = 4
# Larger than any dataset this library is meant for, small enough that a corrupt header cannot
# make us ask for an absurd amount of memory.
MAX_IDX_BYTES = 2**31
# Deflate cannot expand data by more than 1032:1 (a 258-byte match costs at least 2 bits), so a
# gzip file of S bytes decompresses to less than 1032 * S. Checking the header against this
# bound before allocating means a tiny file that claims a huge array is refused without reading.
_MAX_DEFLATE_RATIO = 1032
_GZIP_MAGIC = b"\x1f\x8b"
_READ_CHUNK = 1 << 20

_MNIST_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "mnist")
_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# SHA-256 of the decompressed files, as published in data/mnist/README.md.
_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

_mnist_cache = None
_mnist_lock = threading.Lock()


# --------------------------------------------------------------------------------------------
# IDX reading


# a file or directory name; ((x_train, y_train), (x_test, y_test)) or ((x, y), (x_val, y_val))
PathLike = Union[str, bytes, os.PathLike]
Splits = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def load_idx(path: PathLike, *, max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read one IDX file (raw or gzip) and return its array in native byte order.

    Raises ValueError naming the file when the magic, type code, number of dimensions, a
    dimension, or the amount of data does not match what the header declares, or when the
    declared data would exceed ``max_bytes``. A missing file raises FileNotFoundError.
    """
    header, data, dtype, shape = _read_idx(path, max_bytes)
    return _to_native(data, dtype, shape)


def load_idx_dir(directory: PathLike, *, max_bytes: int = MAX_IDX_BYTES) -> Splits:
    """Read the four MNIST-layout files from ``directory`` (Fashion-MNIST, KMNIST, ...).

    Each of ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``
    and ``t10k-labels-idx1-ubyte`` may be present raw or with a ``.gz`` suffix. Returns
    ``((x_train, y_train), (x_test, y_test))``; images must be 3-D and labels 1-D with the same
    count. Nothing is verified by checksum here.
    """
    directory = _check_path(directory, "directory")
    if not os.path.isdir(directory):
        raise ValueError(f"directory {directory!r} is not a directory")
    arrays = {}
    for name in _MNIST_FILES:
        path = _find_idx_file(directory, name)
        arrays[name] = load_idx(path, max_bytes=max_bytes)
    return _pair_up(arrays, directory)


def _read_idx(path, max_bytes):
    """Return (header bytes, data as a flat uint8 array, big-endian dtype, shape)."""
    path = _check_path(path, "path")
    if not isinstance(max_bytes, numbers.Integral) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive integer, got {max_bytes!r}")
    with open(path, "rb") as raw:
        file_size = os.fstat(raw.fileno()).st_size
        compressed = raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        if not compressed:
            return _read_idx_stream(raw, path, file_size, max_bytes, compressed=False)
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                return _read_idx_stream(stream, path, file_size, max_bytes, compressed=True)
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt gzip stream ({exc})") from None


def _read_idx_stream(stream, path, file_size, max_bytes, compressed):
    magic = stream.read(4)
    if len(magic) < 4:
        raise ValueError(f"{path}: truncated IDX header ({len(magic)} of 4 magic bytes)")
    if magic[0] != 0 or magic[1] != 0:
        raise ValueError(
            f"{path}: not an IDX file (magic starts with {magic[:2].hex()}, expected 0000)"
        )
    type_code, ndim = magic[2], magic[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise ValueError(f"{path}: unknown IDX type code 0x{type_code:02X} (expected {known})")
    if not 1 <= ndim <= _MAX_DIMS:
        raise ValueError(
            f"{path}: IDX header declares {ndim} dimensions (expected 1 to {_MAX_DIMS})"
        )
    dim_bytes = stream.read(4 * ndim)
    if len(dim_bytes) < 4 * ndim:
        raise ValueError(
            f"{path}: truncated IDX header ({len(dim_bytes)} of {4 * ndim} dimension bytes)"
        )
    shape = struct.unpack(f">{ndim}I", dim_bytes)
    for axis, size in enumerate(shape):
        if size == 0:
            raise ValueError(f"{path}: dimension {axis} is 0 (shape {shape})")
    dtype = _IDX_DTYPES[type_code]
    # Python ints: the product cannot overflow, whatever the header says.
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max_bytes:
        raise ValueError(
            f"{path}: IDX header declares shape {shape} of {dtype.name}, {nbytes} bytes, "
            f"above the limit of {max_bytes} bytes"
        )
    header_size = 4 + 4 * ndim
    if not compressed and file_size != header_size + nbytes:
        what = "truncated" if file_size < header_size + nbytes else "has trailing bytes"
        raise ValueError(
            f"{path}: {what}: header declares shape {shape} of {dtype.name} "
            f"({nbytes} data bytes) but the file holds {file_size - header_size}"
        )
    if compressed and header_size + nbytes > _MAX_DEFLATE_RATIO * file_size:
        raise ValueError(
            f"{path}: truncated: header declares shape {shape} of {dtype.name} ({nbytes} data "
            f"bytes), more than a {file_size}-byte gzip file can hold"
        )

    data = np.empty(nbytes, dtype=np.uint8)
    view = memoryview(data)
    filled = 0
    while filled < nbytes:
        # Bounded slices: GzipFile.readinto would otherwise decompress into a temporary as large
        # as the whole request.
        count = stream.readinto(view[filled : filled + _READ_CHUNK])
        if not count:
            raise ValueError(
                f"{path}: truncated: header declares shape {shape} of {dtype.name} "
                f"({nbytes} data bytes) but the data ends after {filled}"
            )
        filled += count
    # For gzip this also reads to the end of the stream, which checks its CRC.
    if stream.read(1):
        raise ValueError(
            f"{path}: has trailing bytes after the {nbytes} data bytes its header declares "
            f"(shape {shape} of {dtype.name})"
        )
    return magic + dim_bytes, data, dtype, shape


def _to_native(data, dtype, shape):
    array = data.view(dtype).reshape(shape)
    native = dtype.newbyteorder("=")
    if native != dtype:
        array = array.byteswap(inplace=True).view(native)
    return array


def _check_path(path, name):
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"{name} must be a str or os.PathLike, got {type(path).__name__}")
    return os.fsdecode(os.fspath(path))


def _find_idx_file(directory, name):
    for candidate in (name + ".gz", name):
        path = os.path.join(directory, candidate)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{directory!r} holds neither {name}.gz nor {name}")


def _pair_up(arrays, source):
    splits = []
    for prefix in ("train", "t10k"):
        images = arrays[f"{prefix}-images-idx3-ubyte"]
        labels = arrays[f"{prefix}-labels-idx1-ubyte"]
        if images.ndim != 3:
            raise ValueError(
                f"{source}: {prefix}-images-idx3-ubyte has shape {images.shape}, expected (N, rows, cols)"
            )
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"{source}: {prefix}-labels-idx1-ubyte has shape {labels.shape}, "
                f"expected ({images.shape[0]},) to match the images"
            )
        splits.append((images, labels))
    return tuple(splits)


# --------------------------------------------------------------------------------------------
# MNIST


def mnist(directory: PathLike | None = None) -> Splits:
    """Return MNIST as ``((x_train, y_train), (x_test, y_test))``.

    Images are uint8 of shape (N, 28, 28), labels uint8 of shape (N,) with values 0-9;
    N is 60,000 for training and 10,000 for test. With no ``directory`` the copy shipped inside
    the package is used, verified against its SHA-256 checksums and decoded once per process;
    each call returns fresh arrays, so changing them does not affect later calls.

    ``directory`` may name another folder holding the same four file names (for example
    Fashion-MNIST or KMNIST); those are read with ``load_idx_dir``, without checksums.
    """
    if directory is not None:
        return load_idx_dir(directory)
    global _mnist_cache
    with _mnist_lock:
        if _mnist_cache is None:
            _mnist_cache = _load_verified_mnist()
        (x_train, y_train), (x_test, y_test) = _mnist_cache
    return (x_train.copy(), y_train.copy()), (x_test.copy(), y_test.copy())


def _load_verified_mnist():
    arrays = {}
    for name in _MNIST_FILES:
        path = os.path.join(_MNIST_DIR, name + ".gz")
        header, data, dtype, shape = _read_idx(path, MAX_IDX_BYTES)
        digest = hashlib.sha256(header)
        digest.update(data)
        if digest.hexdigest() != _MNIST_SHA256[name]:
            raise ValueError(
                f"{path}: SHA-256 of the decompressed data is {digest.hexdigest()}, expected "
                f"{_MNIST_SHA256[name]}; the MNIST copy shipped with fastnn is damaged, "
                f"reinstall the package"
            )
        array = _to_native(data, dtype, shape)
        # The cache is shared by every call; nothing may write to it.
        array.flags.writeable = False
        arrays[name] = array
    return _pair_up(arrays, _MNIST_DIR)


# --------------------------------------------------------------------------------------------
# Splits, batches, scaling


def train_val_split(x: Any, y: Any, fraction: float, seed: Any) -> Splits:
    """Split ``(x, y)`` at random into ``((x_train, y_train), (x_val, y_val))``.

    ``fraction`` (0 < fraction < 1) of the samples, rounded to the nearest count, go to
    validation; both parts must end up non-empty. ``seed`` is an int or a numpy Generator; the
    same int always gives the same split. The returned arrays are C-contiguous copies.
    """
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim < 1 or y.ndim < 1:
        raise ValueError("x and y must have a leading sample axis")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    fraction = validation.real("fraction", fraction, 0.0, min_inclusive=False, below=1.0)
    rng = _as_generator(seed, "seed")
    n = x.shape[0]
    n_val = int(round(n * float(fraction)))
    if n_val < 1 or n_val > n - 1:
        raise ValueError(
            f"fraction={fraction!r} of {n} samples leaves {n_val} for validation and "
            f"{n - n_val} for training; both must be at least 1"
        )
    order = rng.permutation(n)
    val, train = order[:n_val], order[n_val:]
    return (x[train], y[train]), (x[val], y[val])


def batches(
    n: int, batch_size: int, shuffle: bool = True, rng: np.random.Generator | None = None
) -> Iterator[np.ndarray]:
    """Return an iterator over index arrays that cover ``range(n)`` once, ``batch_size`` at a time.

    The last batch holds the remainder when ``batch_size`` does not divide ``n``. With
    ``shuffle`` the order is a fresh permutation drawn from ``rng`` (a numpy Generator or an
    int seed) on every call, so calling once per epoch with the same Generator shuffles each
    epoch differently yet reproducibly. Arguments are checked at the call, not on first use.
    """
    n = validation.integer("n", n, 1)
    batch_size = validation.integer("batch_size", batch_size, 1)
    if shuffle:
        if rng is None:
            raise ValueError("batches(shuffle=True) needs rng: a numpy Generator or an int seed")
        order = _as_generator(rng, "rng").permutation(n)
    else:
        order = np.arange(n)
    return (order[start : start + batch_size] for start in range(0, n, batch_size))


def _all_finite(a):
    """np.isfinite(a).all() for a C-contiguous float32/float64 array, as one compiled scan (no
    temporary the size of the data) where the kernels are built."""
    try:
        from fastnn._kernels.runtime import all_finite_bits
    except ImportError:
        return bool(np.isfinite(a).all())
    return bool(all_finite_bits(a.reshape(-1).view(np.uint32 if a.itemsize == 4 else np.uint64)))


def to_float(x: Any, name: str = "x", dtype: Any = np.float32) -> np.ndarray:
    """Return ``x`` as C-contiguous float32 (or `dtype`: float64): uint8 images are scaled to
    [0, 1].

    Floating input is converted as it is (no scaling) and must be finite. Other dtypes raise
    TypeError: silently scaling int labels or int16 images would hide a mistake.
    """
    x = np.asarray(x)
    dtype = np.dtype(dtype)
    if x.dtype == np.uint8:
        out = x.astype(dtype, order="C")
        out /= 255.0
        return out
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be uint8 images or floating point, got dtype {x.dtype}")
    with np.errstate(over="ignore"):  # out-of-range values become inf, refused just below
        out = np.ascontiguousarray(x, dtype=dtype)
    if not _all_finite(out):
        raise ValueError(nonfinite_message(x, name, converted=out))
    return out


def nonfinite_message(x: Any, name: str = "x", converted: np.ndarray | None = None) -> str:
    """The message for data holding NaN or infinity: the first such value's index (sample
    first), how many there are, and what to do. `converted` is x after a narrowing conversion
    (float64 -> float32), where a finite value may have become infinite."""
    x = np.asarray(x)
    bad = ~np.isfinite(x if converted is None else converted)
    first = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), bad.shape))
    count = int(np.count_nonzero(bad))
    samples = int(np.count_nonzero(bad.reshape(bad.shape[0], -1).any(axis=1))) if bad.ndim else 1
    value = float(x[first])
    where = f"{name}[{', '.join(map(str, first))}]"
    if math.isfinite(value):
        what = f"{where} = {value:g}, beyond float32's range"
    else:
        what = f"{where} is {value}"
    sample = f" (sample {first[0]})" if len(first) > 1 else ""
    return (
        f"{name} holds NaN or infinite values: {what}{sample}; {count:,} such "
        f"value{'s' if count != 1 else ''} in {samples:,} sample{'s' if samples != 1 else ''}. "
        f"Drop those samples ({name}[np.isfinite({name}).reshape(len({name}), -1)"
        f".all(axis=1)], and the same labels) or replace the values (np.nan_to_num)"
    )


class UnscaledPixelsWarning(UserWarning):
    """Float images that look like 0-255 pixel values (fastnn scales only uint8 images)."""


def warn_if_unscaled_pixels(x: np.ndarray, name: str = "x", stacklevel: int = 2) -> None:
    """Warn when float `x` looks like images in 0-255: whole numbers from >= 0 up to a maximum
    above 1 and at most 255. Float input is never rescaled (it may be features in any range,
    or images already normalised differently); uint8 images are, so the fix is either."""
    if x.dtype == np.uint8 or not np.issubdtype(x.dtype, np.floating) or x.size == 0:
        return
    head = np.asarray(x[:16], dtype=np.float64)
    if not np.array_equal(head, np.round(head)):  # cheap first look: most floats bail here
        return
    low, high = float(np.min(x)), float(np.max(x))
    if low >= 0.0 and 1.0 < high <= 255.0:
        warnings.warn(
            f"{name} is {x.dtype} with whole values from {low:g} to {high:g}: it looks like "
            f"images in 0-255, which fastnn does not rescale when they are floats (training "
            f"on them diverges or learns little). Pass {name} / 255 (or the uint8 images, "
            f"which fastnn scales to [0, 1] itself)",
            UnscaledPixelsWarning,
            stacklevel=stacklevel + 1,
        )


def _as_generator(seed, name):
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if seed < 0:
            raise ValueError(f"{name} must be a non-negative int, got {seed}")
        return np.random.default_rng(int(seed))
    raise TypeError(f"{name} must be a numpy Generator or a non-negative int, got {seed!r}")
