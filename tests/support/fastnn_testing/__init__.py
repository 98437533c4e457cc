"""Helpers shared by the test suite: one numerical comparison and the float64 finite differences.

Importable as `fastnn_testing` because pyproject.toml's `[tool.pytest.ini_options] pythonpath`
puts tests/support on sys.path (pytest runs with --import-mode=importlib, so test files cannot
import each other or conftest.py). A child interpreter started by a test gets the same path from
`child_env()`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

import numpy as np

DTYPES = (np.float32, np.float64)

# Largest error allowed relative to the largest magnitude in the expected result: float32 allows
# a few ulps of accumulated rounding at the sizes the tests use; float64 stays far below it.
TOLERANCE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}

SUPPORT_DIR = Path(__file__).resolve().parent.parent


def relative_error(actual: Any, expected: Any, floor: float | None = None) -> float:
    """max |actual - expected| over max(max |expected|, floor), computed in float64."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if floor is None:
        floor = float(np.finfo(expected.dtype).tiny) if expected.dtype.kind == "f" else 1.0
    scale = max(float(np.abs(expected).max(initial=0.0)), floor)
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64)).max(initial=0.0)
    return float(diff) / scale


def assert_matches(
    actual: Any,
    expected: Any,
    dtype: Any = None,
    *,
    rtol: float | None = None,
    floor: float | None = None,
) -> None:
    """`actual` equals `expected` up to rounding: the same shape; the dtype `dtype` (the
    precision under test; `expected` may then be a float64 reference) or, without `dtype`, the
    expected array's dtype; and a maximum error relative to the largest expected magnitude (at
    least `floor`) within `rtol`, which defaults to TOLERANCE of that dtype. Integer arrays must
    be equal. Tuples are compared element by element; a None must match a None. A NaN or an
    infinity matches only the same value at the same place."""
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), (actual, expected)
        for a, e in zip(actual, expected):
            assert_matches(a, e, dtype, rtol=rtol, floor=floor)
        return
    if expected is None:
        assert actual is None, actual
        return
    actual, expected = np.asarray(actual), np.asarray(expected)
    dtype = expected.dtype if dtype is None else np.dtype(dtype)
    assert actual.shape == expected.shape and actual.dtype == dtype, (
        actual.shape,
        actual.dtype,
        expected.shape,
        expected.dtype,
    )
    if expected.dtype.kind in "iub":
        np.testing.assert_array_equal(actual, expected)
        return
    if rtol is None:
        rtol = TOLERANCE[dtype]
    finite = np.isfinite(expected)
    if not finite.all():
        np.testing.assert_array_equal(actual[~finite], expected[~finite])
        actual, expected = actual[finite], expected[finite]
    error = relative_error(actual, expected, floor)
    assert error <= rtol, f"relative error {error:.3g} > {rtol:.3g}"


def numeric_grad(f: Callable[[], float], a: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every element of the float64 array
    `a`, which f reads and this function perturbs in place (and restores)."""
    assert a.dtype == np.float64, "finite differences are only meaningful in float64"
    grad = np.zeros_like(a)
    flat, gflat = a.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = f()
        flat[i] = old - eps
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return grad


def child_env(base: Mapping[str, str] | None = None, *extra_paths: os.PathLike | str) -> dict:
    """Environment for a child interpreter that imports fastnn_testing (and `extra_paths`):
    PYTHONPATH gains them in front of what it had."""
    env = dict(os.environ if base is None else base)
    paths = [str(SUPPORT_DIR), *map(str, extra_paths)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def import_path(path: os.PathLike | str, name: str | None = None):
    """Import the Python file at `path` as a module (for a child interpreter that reuses a test
    module's functions)."""
    import importlib.util
    import sys

    path = Path(path)
    name = name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def run_in_child(
    test_file: os.PathLike | str, expression: str, *, setup: str = "", timeout: float = 600
) -> Any:
    """The value of `expression`, evaluated in a fresh interpreter where the test module at
    `test_file` is imported as `t` (after the statements `setup`) and passed back as JSON: for
    measurements a long test session's state would blur (memory growth) and campaigns that
    must not take the session down (fuzzing). A failed child fails the caller with the tail
    of its stderr."""
    import json
    import subprocess
    import sys

    code = (
        "import json, faulthandler, fastnn_testing; faulthandler.enable(); "
        + (f"{setup}; " if setup else "")
        + f"t = fastnn_testing.import_path({str(test_file)!r}); print(json.dumps({expression}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=timeout,
        cwd=Path(test_file).parent,
    )
    assert result.returncode == 0, f"exit status {result.returncode}\n{result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])
