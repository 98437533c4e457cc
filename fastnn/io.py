"""Save and load models: one .npz holding the weights and a JSON header, no pickle.

The header ("__fastnn__", UTF-8 JSON as uint8) gives the format, the fastnn version, the
architecture (Sequential.config()) and, per parameter, its shape, dtype and SHA-256. Loading
rebuilds the architecture without allocating weights, checks every member's size against the
shapes it implies before reading it, then checks shapes, dtypes and digests: a truncated,
tampered or foreign file raises ValueError, never a crash or a huge allocation.

Saving writes a temporary file in the target's directory, fsyncs it and renames it over the
target, so a crash leaves either the old file or the new one, never half of one.
"""
import hashlib
import json
import math
import os
import tempfile
import zipfile
import zlib

import numpy as np

from . import __version__
from .model import Sequential

FORMAT = "fastnn.model"
FORMAT_VERSION = 1
HEADER = "__fastnn__"
MAX_HEADER_BYTES = 1 << 20
# room for the .npy header in front of each array's data
_NPY_HEADER_SLACK = 4096
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error,
                UnicodeDecodeError, RecursionError)


def _check_path(path):
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return os.fsdecode(os.fspath(path))


def _digest(a):
    return hashlib.sha256(memoryview(np.ascontiguousarray(a)).cast("B")).hexdigest()


def atomic_write(path, write):
    """Call write(file) on a temp file beside `path`, fsync, then rename it to `path`."""
    path = os.path.abspath(_check_path(path))
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def save(model, path):
    """Write `model` to `path` (.npz): weights, architecture, fastnn version; atomically."""
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastnn Sequential, got {type(model).__name__}")
    arrays = model.state_dict()
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastnn_version": __version__,
        "architecture": model.config(),
        "params": {name: {"shape": list(a.shape), "dtype": a.dtype.name, "sha256": _digest(a)}
                   for name, a in arrays.items()},
    }
    blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **{HEADER: blob}, **arrays))


def load(path, backend=None):
    """Read a model written by save(); ValueError when the file is not a valid fastnn model."""
    path = _check_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such model file: {path!r}")
    try:
        npz = np.load(path, allow_pickle=False)
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("it is a single .npy array, not a fastnn model (.npz)")
        with npz:
            return _load_npz(npz, backend)
    except ValueError as exc:
        raise ValueError(f"{path}: not a valid fastnn model file: {exc}") from None
    except _READ_ERRORS as exc:
        raise ValueError(f"{path}: not a valid fastnn model file: {type(exc).__name__}: "
                         f"{exc}") from None


def _member_size(npz, name):
    return npz.zip.getinfo(name + ".npy").file_size


def _load_npz(npz, backend):
    members = set(npz.files)
    if HEADER not in members:
        raise ValueError(f"no {HEADER} header (a .npz, but not one fastnn wrote)")
    if _member_size(npz, HEADER) > MAX_HEADER_BYTES + _NPY_HEADER_SLACK:
        raise ValueError("header is implausibly large")
    blob = npz[HEADER]
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise ValueError("header has the wrong type")
    header = json.loads(blob.tobytes().decode("utf-8"))
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError("header does not describe a fastnn model")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"format version {header.get('format_version')!r} is not supported "
                         f"(this fastnn {__version__} reads version {FORMAT_VERSION})")
    if not isinstance(header.get("fastnn_version"), str):
        raise ValueError("header lacks the fastnn version")
    params = header.get("params")
    if not isinstance(params, dict):
        raise ValueError("header lacks the parameter list")

    model = Sequential.from_config(header.get("architecture"), backend=backend, initialize=False)
    expected = model.param_shapes()
    if set(params) != set(expected):
        raise ValueError(f"parameter list {sorted(params)} does not match the architecture's "
                         f"{sorted(expected)}")
    if members != set(expected) | {HEADER}:
        raise ValueError(f"arrays {sorted(members - {HEADER})} do not match the architecture's "
                         f"parameters {sorted(expected)}")
    dtype = model.dtype
    arrays = {}
    for name, shape in expected.items():
        info = params[name]
        if not isinstance(info, dict) or info.get("shape") != list(shape) or \
                info.get("dtype") != dtype.name:
            raise ValueError(f"header entry for {name} ({info!r}) does not match the "
                             f"architecture: shape {shape}, dtype {dtype.name}")
        nbytes = math.prod(shape) * dtype.itemsize
        size = _member_size(npz, name)
        if not nbytes <= size <= nbytes + _NPY_HEADER_SLACK:
            raise ValueError(f"array {name} holds {size} bytes, expected {nbytes} of data for "
                             f"shape {shape} {dtype.name}")
        a = npz[name]
        if a.shape != shape or a.dtype != dtype:
            raise ValueError(f"array {name} has shape {a.shape} and dtype {a.dtype}, expected "
                             f"{shape} {dtype.name}")
        if _digest(a) != info.get("sha256"):
            raise ValueError(f"array {name} does not match its SHA-256 (the file was changed)")
        arrays[name] = a
    model.load_state_dict(arrays)
    return model
