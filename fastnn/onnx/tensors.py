"""ONNX tensors -> numpy arrays, trusting nothing: every declared size is checked against the
bytes present before an array is built, and external data is read only from files beside the
model."""

from __future__ import annotations

import math
import os

import numpy as np

from ._common import (
    _TENSOR_DTYPES,
    _TYPED_FIELDS,
    MAX_DIM,
    MAX_TENSOR_ELEMENTS,
)


def tensor_to_array(tensor, name, base_dir=None) -> np.ndarray:
    """A TensorProto as a numpy array, checking its type and declared size against the data
    present before building anything. External data (as torch.onnx.export writes by default)
    is read from a file inside `base_dir`, the model file's directory, and nowhere else."""
    dims = list(tensor.dims)
    if len(dims) > 8 or any(d < 0 or d > MAX_DIM for d in dims):
        raise ValueError(f"tensor {name!r} declares an invalid shape {dims}")
    count = math.prod(dims)
    if count > MAX_TENSOR_ELEMENTS:
        raise ValueError(
            f"tensor {name!r} declares {count} elements, more than the "
            f"{MAX_TENSOR_ELEMENTS} allowed"
        )
    dtype = _TENSOR_DTYPES.get(tensor.data_type)
    if dtype is None:
        raise ValueError(
            f"tensor {name!r} has element type {tensor.data_type}; float32, "
            f"float64, int32 and int64 tensors are supported"
        )
    dtype = np.dtype(dtype).newbyteorder("<")
    if tensor.data_location == 1 or len(tensor.external_data):
        raw = _read_external(tensor, name, count * dtype.itemsize, base_dir)
        flat = np.frombuffer(raw, dtype=dtype)
    elif tensor.HasField("raw_data"):
        raw = tensor.raw_data
        if len(raw) != count * dtype.itemsize:
            raise ValueError(
                f"tensor {name!r} declares shape {dims} ({count} elements) but "
                f"holds {len(raw)} bytes"
            )
        flat = np.frombuffer(raw, dtype=dtype)
    else:
        values = getattr(tensor, _TYPED_FIELDS[tensor.data_type])
        if len(values) != count:
            raise ValueError(
                f"tensor {name!r} declares shape {dims} ({count} elements) but "
                f"holds {len(values)} values"
            )
        flat = np.fromiter(values, dtype=dtype, count=count)
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(dims)


def _read_external(tensor, name, nbytes, base_dir):
    """`nbytes` of a tensor's external data: from a regular file inside `base_dir` (no absolute
    paths, no way out through '..' or links), at an offset the file is long enough for."""
    if base_dir is None:
        raise ValueError(
            f"tensor {name!r} keeps its data in an external file, which needs the "
            f"model loaded from its path (not from bytes)"
        )
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries.get("length", str(nbytes)))
    except ValueError:
        raise ValueError(f"tensor {name!r}: invalid external data offset/length") from None
    if length != nbytes or offset < 0:
        raise ValueError(
            f"tensor {name!r} needs {nbytes} bytes of external data, the file "
            f"declares {length} at offset {offset}"
        )
    root = os.path.realpath(base_dir)
    path = os.path.realpath(os.path.join(root, location))
    if (
        not location
        or "\0" in location
        or os.path.isabs(location)
        or os.path.commonpath([root, path]) != root
        or not os.path.isfile(path)
    ):
        raise ValueError(
            f"tensor {name!r}: external data location {location!r} is not a file beside the model"
        )
    size = os.path.getsize(path)
    if offset + nbytes > size:
        raise ValueError(
            f"tensor {name!r} needs bytes {offset}..{offset + nbytes} of "
            f"{location!r}, which has {size}"
        )
    with open(path, "rb") as f:
        f.seek(offset)
        raw = f.read(nbytes)
    if len(raw) != nbytes:
        raise ValueError(f"tensor {name!r}: {location!r} ended early")
    return raw
