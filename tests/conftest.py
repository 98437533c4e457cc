"""Fixtures for the whole suite. Shared helper functions live in tests/support/fastnn_testing
(on sys.path through pyproject.toml's pytest `pythonpath`), not here: conftest.py is not
importable under --import-mode=importlib."""

import numpy as np
import pytest

from fastnn import backends
from fastnn_testing import DTYPES

# The host backends; cuda has its own tests in tests/cuda/ (it needs a GPU to compute).
HOST_BACKENDS = ("numpy", "cpu")


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    """Each floating dtype fastnn computes in (a test's own `dtype` parametrization wins)."""
    return request.param


@pytest.fixture(params=HOST_BACKENDS)
def backend(request):
    """Each host backend object; skipped where it cannot run (cpu without its compiled kernels)."""
    availability = backends.available()[request.param]
    if not availability:
        pytest.skip(f"backend {request.param!r} unavailable: {availability.reason}")
    return backends.get(request.param)
