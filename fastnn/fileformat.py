"""fastnn's files: an .npz of named arrays plus a JSON header, written atomically, read safely.

This module imports nothing from fastnn, so model files (fastnn.serialization, Sequential.save)
and training checkpoints (fastnn.checkpoint) both build on it without importing each other.

The header is UTF-8 JSON stored as a uint8 member; it lists, per array, its shape, dtype and
SHA-256. Reading checks every member's size and .npy header against the shape the caller
expects before reading its data (numpy's own reader would allocate whatever shape a header
claims), then the digests: a truncated, tampered or foreign file raises ValueError, never a
crash or a huge allocation.

Writing goes to a temporary file in the target's directory, which is fsynced and renamed over
the target, then the directory fsynced: a crash leaves the old file or the new one, never half
of one. The new file gets the permissions `open(path, "w")` would give it: an existing file's
own, otherwise 0o666 less the process umask.
"""

import hashlib
import io
import json
import lzma
import math
import os
import stat
import struct
import tempfile
import threading
import tokenize
import zipfile
import zlib

import numpy as np

# the model file format (Sequential.save, fastnn.load)
MODEL_FORMAT = "fastnn.model"
MODEL_FORMAT_VERSION = 1
MODEL_HEADER = "__fastnn__"

MAX_HEADER_BYTES = 1 << 20
# room for the .npy header in front of each array's data
_NPY_HEADER_SLACK = 4096
# What reading a damaged zip can raise: a flipped compression method reaches lzma/bz2 or an
# unsupported method (NotImplementedError), a flipped flag an "encrypted" member (RuntimeError).
READ_ERRORS = (
    OSError,
    EOFError,
    ValueError,
    KeyError,
    zipfile.BadZipFile,
    zlib.error,
    lzma.LZMAError,
    struct.error,
    UnicodeDecodeError,
    RecursionError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
)
_NPY_HEADER_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    SyntaxError,
    tokenize.TokenError,
    UnicodeDecodeError,
    OverflowError,
    RecursionError,
)
_UMASK_LOCK = threading.Lock()


def check_path(path):
    """`path` (str, bytes or os.PathLike) as a str; TypeError for anything else."""
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return os.fsdecode(os.fspath(path))


def digest(a):
    """SHA-256 (hex) of an array's bytes in C order."""
    return hashlib.sha256(memoryview(np.ascontiguousarray(a)).cast("B")).hexdigest()


def array_entries(arrays):
    """{name: {"shape", "dtype", "sha256"}}: the header's description of `arrays`."""
    return {
        name: {"shape": list(a.shape), "dtype": a.dtype.name, "sha256": digest(a)}
        for name, a in arrays.items()
    }


# ---- writing ------------------------------------------------------------------------------------


def _umask():
    """The process umask, read without changing it where the system allows (Linux); elsewhere
    set and restored under a lock (os.umask has no read-only form)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def _new_file_mode(path):
    """The permissions open(path, "w") would leave: the existing file's, else 0o666 & ~umask
    (mkstemp makes its file 0o600 whatever the umask)."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~_umask()


def atomic_write(path, write):
    """Call write(file) on a temp file beside `path`, fsync, then rename it to `path`."""
    path = os.path.abspath(check_path(path))
    directory = os.path.dirname(path)
    mode = _new_file_mode(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, mode)
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


def write_npz(path, header_name, header, arrays):
    """Write `arrays` and the JSON object `header` (as member `header_name`) to `path`,
    atomically."""
    blob = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **{header_name: blob}, **arrays))


def write_model(path, architecture, arrays, fastnn_version):
    """A model file: its parameters and a header with the architecture and fastnn version."""
    header = {
        "format": MODEL_FORMAT,
        "format_version": MODEL_FORMAT_VERSION,
        "fastnn_version": fastnn_version,
        "architecture": architecture,
        "params": array_entries(arrays),
    }
    write_npz(path, MODEL_HEADER, header, arrays)


# ---- reading ------------------------------------------------------------------------------------


def read_file(path, kind, read):
    """read(archive) on the .npz at `path`; FileNotFoundError "no such <kind>" when there is
    none, ValueError "<path>: not a valid fastnn <kind>: ..." for anything wrong inside."""
    path = check_path(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such {kind}: {path!r}")
    try:
        with Archive(path) as archive:
            return read(archive)
    except ValueError as exc:
        raise ValueError(f"{path}: not a valid fastnn {kind}: {exc}") from None
    except READ_ERRORS as exc:
        raise ValueError(
            f"{path}: not a valid fastnn {kind}: {type(exc).__name__}: {exc}"
        ) from None


class Archive:
    """A .npz read one member at a time, each member's size and .npy header checked against
    what the caller expects before any of its data is read. Errors are ValueError or one of
    READ_ERRORS."""

    def __init__(self, path):
        self.zip = zipfile.ZipFile(path)
        try:
            names = self.zip.namelist()
            if len(names) != len(set(names)):
                raise ValueError("the archive names a member twice")
            odd = [n for n in names if not n.endswith(".npy")]
            if odd:
                raise ValueError(f"member {odd[0]!r} is not a .npy array")
            # np.savez stores, savez_compressed deflates; LZMA would size its dictionary from
            # the file (up to 4 GiB)
            for info in self.zip.infolist():
                if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                    raise ValueError(
                        f"member {info.filename!r} uses compression method "
                        f"{info.compress_type}; only stored and deflated are read"
                    )
            self.files = {n[:-4] for n in names}
        except BaseException:
            self.zip.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.zip.close()

    def read(self, name, dtype, shape=None, max_bytes=None):
        """Member `name` as an array of `dtype` (native byte order) and `shape` (or any 1-D
        shape within max_bytes when shape is None)."""
        dtype = np.dtype(dtype)
        if shape is not None:
            max_bytes = math.prod(shape) * dtype.itemsize
        info = self.zip.getinfo(name + ".npy")
        limit = max_bytes + _NPY_HEADER_SLACK
        if info.file_size > limit:
            raise ValueError(
                f"array {name} holds {info.file_size} bytes, expected at most {max_bytes} of data"
            )
        with self.zip.open(info) as f:
            raw = f.read(limit + 1)
        if len(raw) > limit:
            raise ValueError(f"array {name} holds more than its declared {info.file_size} bytes")
        fp = io.BytesIO(raw)
        version = np.lib.format.read_magic(fp)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"array {name}: .npy format version {version} is not supported")
        try:
            read_header = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            found_shape, fortran, found = read_header(fp)
        except _NPY_HEADER_ERRORS as exc:  # numpy tokenizes the header: garbage raises these
            raise ValueError(
                f"array {name} has a damaged .npy header ({type(exc).__name__}: {exc})"
            ) from None
        if found != dtype:
            raise ValueError(f"array {name} has dtype {found}, expected {dtype}")
        found_shape = tuple(found_shape)
        if shape is not None and found_shape != tuple(shape):
            raise ValueError(f"array {name} has shape {found_shape}, expected {tuple(shape)}")
        if shape is None and len(found_shape) != 1:
            raise ValueError(f"array {name} must be 1-D, got shape {found_shape}")
        data = raw[fp.tell() :]
        count = math.prod(found_shape)
        if any(d < 0 for d in found_shape) or len(data) != count * dtype.itemsize:
            raise ValueError(
                f"array {name} holds {len(data)} bytes of data, expected "
                f"{count * dtype.itemsize} for shape {found_shape}"
            )
        a = np.frombuffer(data, dtype=dtype, count=count)
        if fortran:
            return np.ascontiguousarray(a.reshape(found_shape[::-1]).T)
        return a.reshape(found_shape).copy()


def _no_constant(name):
    raise ValueError(f"the header holds {name}, which fastnn never writes")


def read_json_header(archive, name):
    """The UTF-8 JSON object stored as a uint8 member `name`."""
    if name not in archive.files:
        raise ValueError(f"no {name} header (a .npz, but not one fastnn wrote)")
    blob = archive.read(name, np.uint8, max_bytes=MAX_HEADER_BYTES)
    header = json.loads(blob.tobytes().decode("utf-8"), parse_constant=_no_constant)
    if not isinstance(header, dict):
        raise ValueError(f"{name} header is not a JSON object")
    return header


def read_format_header(archive, name, fmt, version, what, fastnn_version):
    """The JSON header `name` of a fastnn `what` ("model", "checkpoint"), its format `fmt` and
    format version `version` checked."""
    header = read_json_header(archive, name)
    if header.get("format") != fmt:
        raise ValueError(f"header does not describe a fastnn {what}")
    if header.get("format_version") != version:
        raise ValueError(
            f"{what} format version {header.get('format_version')!r} is not supported "
            f"(this fastnn {fastnn_version} reads version {version})"
        )
    return header


def read_model_header(archive, fastnn_version):
    """(architecture, {param name: header entry}) of a model file, its format checked."""
    header = read_format_header(
        archive, MODEL_HEADER, MODEL_FORMAT, MODEL_FORMAT_VERSION, "model", fastnn_version
    )
    if not isinstance(header.get("fastnn_version"), str):
        raise ValueError("header lacks the fastnn version")
    params = header.get("params")
    if not isinstance(params, dict):
        raise ValueError("header lacks the parameter list")
    return header.get("architecture"), params


def read_arrays(archive, shapes, entries, dtype):
    """{name: array} for every name in `shapes`, each checked against its header entry
    {"shape", "dtype", "sha256"} and the expected shape and dtype (one for all, or a dict
    name -> dtype) before it is read."""
    arrays = {}
    dtypes = dtype if isinstance(dtype, dict) else None
    for name, shape in shapes.items():
        if dtypes is not None:
            dtype = np.dtype(dtypes[name])
        info = entries[name]
        if (
            not isinstance(info, dict)
            or info.get("shape") != list(shape)
            or info.get("dtype") != dtype.name
        ):
            raise ValueError(
                f"header entry for {name} ({info!r}) does not match the "
                f"architecture: shape {shape}, dtype {dtype.name}"
            )
        a = archive.read(name, dtype, shape)
        if digest(a) != info.get("sha256"):
            raise ValueError(f"array {name} does not match its SHA-256 (the file was changed)")
        arrays[name] = a
    return arrays
