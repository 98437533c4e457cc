"""The repository's own checks, run by the suite so that CI enforces them: ruff (lint and
format), cython-lint (the kernels) and mypy (the public API's type hints), each with its settings in
pyproject.toml. A check is skipped where its tool is not installed (the `test` extra installs
all three) or where the tests run outside a checkout."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(
    not (ROOT / "pyproject.toml").is_file() or not (ROOT / "fastnn").is_dir(),
    reason="needs the repository checkout beside the tests",
)


def run_tool(module, *args):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install '.[test]')")
    # the tools start helpers of their own (cython-lint runs pycodestyle) from this environment
    env = dict(
        os.environ,
        PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
    )
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]


def test_ruff_finds_nothing():
    run_tool("ruff", "-m", "ruff", "check", "--no-cache", ".")


def test_ruff_format_would_change_nothing():
    run_tool("ruff", "-m", "ruff", "format", "--check", "--no-cache", ".")


def test_cython_lint_finds_nothing():
    kernels = sorted(
        str(p.relative_to(ROOT))
        for pattern in ("*.pyx", "*.pxd")
        for p in (ROOT / "fastnn" / "_kernels").glob(pattern)
    )
    assert kernels
    run_tool(
        "cython_lint",
        "-c",
        "import sys; from cython_lint.cython_lint import main; sys.exit(main(sys.argv[1:]))",
        *kernels,
    )


def test_mypy_accepts_the_public_api():
    run_tool("mypy", "-m", "mypy")
