"""Fixtures for the cuda tests: the host harness built once per session, and `fake_cuda`, the
cuda backend as `fastnn.backends.get("cuda")` gives it, running on the CuPy stand-in
(fakecupy.py) with its kernels in the harness."""

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
HARNESS_DIR = HERE / "harness"


def load_helper(name, path):
    """A helper module of the tests, imported from its file (the tests are not a package)."""
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


host_harness = load_helper("fastnn_tests_host_harness", HARNESS_DIR / "host_harness.py")
fakecupy = load_helper("fastnn_tests_fakecupy", HERE / "fakecupy.py")

# Threads per block and most blocks per launch on the stand-in: the harness runs one host
# thread per CUDA thread, so small blocks (grid-stride loops do the rest) keep CI quick.
FAKE_THREADS, FAKE_MAX_BLOCKS = 32, 2


@pytest.fixture(scope="session")
def harness_library(tmp_path_factory):
    if host_harness.compiler() is None:
        pytest.skip("no C++ compiler (g++) for the host harness")
    return host_harness.HostLibrary(host_harness.build(tmp_path_factory.mktemp("fakecupy")))


@pytest.fixture
def fake_cupy(harness_library, monkeypatch):
    """fakecupy installed as `cupy` (import cupy gives it), its counters zeroed."""
    from fastnn.backends import cuda
    from fastnn.backends.cuda import kernels, sources

    fakecupy.install(harness_library, {f: sources.source(f) for f in sources.FAMILIES})
    monkeypatch.setitem(sys.modules, "cupy", fakecupy)
    monkeypatch.setitem(sys.modules, "cupy.cuda", fakecupy.cuda)
    monkeypatch.setitem(sys.modules, "cupy.random", fakecupy.random)
    monkeypatch.setattr(kernels, "_raw_modules", {})
    monkeypatch.setattr(cuda, "_probed", [])
    return fakecupy


@pytest.fixture
def fake_cuda(fake_cupy, monkeypatch):
    """backends.get("cuda") on the stand-in: the registry's own instance, as user code gets it."""
    from fastnn import backends

    monkeypatch.setattr(
        backends, "_instances", {k: v for k, v in backends._instances.items() if k != "cuda"}
    )
    backend = backends.get("cuda")
    backend.threads, backend.max_blocks = FAKE_THREADS, FAKE_MAX_BLOCKS
    fake_cupy.stats.reset()
    return backend


@pytest.fixture(scope="session")
def fakecupy_module():
    """The stand-in module itself, not installed."""
    return fakecupy
