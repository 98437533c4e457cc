"""Save and load models: one .npz holding the weights and a JSON header, no pickle.

The header (see fastnn.fileformat) gives the format, the fastnn version, the architecture
(Sequential.config()) and, per parameter, its shape, dtype and SHA-256. Loading rebuilds the
architecture without allocating weights, then reads each parameter checked against the shape
it implies: a truncated, tampered or foreign file raises ValueError, never a crash or a huge
allocation. Saving is atomic: a crash leaves either the old file or the new one.
"""

from __future__ import annotations

import os
from typing import Any

from . import fileformat
from ._version import __version__
from .model import Sequential


def save(model: Sequential, path: str | os.PathLike[str]) -> None:
    """Write `model` to `path` (.npz): weights, architecture, fastnn version; atomically."""
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastnn Sequential, got {type(model).__name__}")
    model.save(path)


def load(path: str | os.PathLike[str], backend: Any = None) -> Sequential:
    """Read a model written by save(); ValueError when the file is not a valid fastnn model."""
    return fileformat.read_file(path, "model file", lambda archive: _read_model(archive, backend))


def model_from_architecture(architecture: Any, backend: Any = None) -> Sequential:
    """A model of a saved architecture (Sequential.config()), its parameters left to
    load_state_dict; ValueError for a tampered architecture (model files and checkpoints)."""
    try:
        return Sequential.from_config(architecture, backend=backend, initialize=False)
    except (TypeError, KeyError, OverflowError) as exc:
        raise ValueError(f"architecture: {type(exc).__name__}: {exc}") from None


def _read_model(archive, backend):
    architecture, params = fileformat.read_model_header(archive, __version__)
    model = model_from_architecture(architecture, backend)
    if model.input_shape is not None:
        model.output_shape(model.input_shape)  # ValueError when it does not fit the layers
    expected = model.param_shapes()
    if set(params) != set(expected):
        raise ValueError(
            f"parameter list {sorted(params)} does not match the architecture's {sorted(expected)}"
        )
    members = archive.files
    header = fileformat.MODEL_HEADER
    if members != set(expected) | {header}:
        raise ValueError(
            f"arrays {sorted(members - {header})} do not match the architecture's "
            f"parameters {sorted(expected)}"
        )
    model.load_state_dict(fileformat.read_arrays(archive, expected, params, model.state_dtypes()))
    return model
