"""Whether the cuda backend says it can run, and why not: with CuPy installed or not (each
simulated in a fresh interpreter), with a driver or not. `import fastnn` never imports CuPy."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

# A meta-path finder that makes `import cupy` fail as if CuPy were not installed.
_HIDE_CUPY = """
import sys
class _NoCupy:
    def find_spec(self, name, path=None, target=None):
        if name == "cupy" or name.startswith("cupy."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, _NoCupy())
"""


def _fake_cupy(tmp_path, driver=13000, devices="return 1", matmul="return a"):
    """A stand-in CuPy package in tmp_path: `driver` is what driverGetVersion returns (0: no
    driver installed), `devices` the body of getDeviceCount, `matmul` that of cupy.matmul."""
    package = tmp_path / "cupy"
    (package / "cuda").mkdir(parents=True)
    (package / "__init__.py").write_text(
        textwrap.dedent(f"""
        from . import cuda, random
        float32 = "float32"
        def ones(*args, **kwargs):
            return [1.0]
        def matmul(a, b):
            {matmul}
    """)
    )
    (package / "random.py").write_text(
        "class _G:\n    def random(self, *a, **k):\n"
        "        return [0.5]\n"
        "def default_rng(seed=None):\n    return _G()\n"
    )
    (package / "cuda" / "__init__.py").write_text(
        textwrap.dedent("""
        from . import nvrtc, runtime
        class _Stream:
            def synchronize(self):
                pass
        def get_current_stream():
            return _Stream()
    """)
    )
    (package / "cuda" / "nvrtc.py").write_text("def getVersion():\n    return (13, 0)\n")
    (package / "cuda" / "runtime.py").write_text(
        textwrap.dedent(f"""
        class CUDARuntimeError(RuntimeError):
            pass
        def driverGetVersion():
            return {driver}
        def runtimeGetVersion():
            return 13000
        def getDeviceCount():
            {devices}
    """)
    )
    return tmp_path


_INSUFFICIENT = (
    'raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is '
    'insufficient for CUDA runtime version")'
)
_PROBE = """
    import json
    import fastnn.backends as backends
    try:
        backends.get("cuda")
        raised = None
    except backends.BackendUnavailable as exc:
        raised = str(exc)
    print(json.dumps({"reason": backends.available()["cuda"].reason, "raised": raised}))
"""


def run_python(code, path=None):
    """Run `code` in a fresh interpreter; returns what it printed as JSON on its last line."""
    env = dict(os.environ)
    if path:  # a stand-in package directory, found before anything installed
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_fastnn_does_not_import_cupy():
    out = run_python("""
        import json, sys
        import fastnn, fastnn.backends, fastnn.backends.cuda
        print(json.dumps(sorted(m for m in sys.modules if m == "cupy" or m.startswith("cupy."))))
    """)
    assert out == []


def test_without_cupy_the_reason_names_the_pip_command():
    out = run_python(
        _HIDE_CUPY
        + """
import json
import fastnn.backends as backends
from fastnn.backends import cuda
status = backends.available()["cuda"]
try:
    backends.get("cuda")
    raised = None
except backends.BackendUnavailable as exc:
    raised = str(exc)
print(json.dumps({"probe": cuda.probe(), "ok": bool(status), "reason": status.reason,
                  "raised": raised, "numpy": bool(backends.available()["numpy"])}))
"""
    )
    assert out["probe"].startswith("CuPy is not installed")
    assert 'pip install "cupy-cuda12x[ctk]"' in out["probe"] and "cupy-cuda13x" in out["probe"]
    assert out["ok"] is False and out["reason"] == out["probe"]
    assert out["raised"] == f"backend 'cuda' is unavailable: {out['probe']}"
    assert "\n" not in out["raised"]  # one line, fit for the examples' exit message
    assert out["numpy"] is True


def test_without_a_gpu_or_driver_the_reason_says_so_and_not_upgrade(tmp_path):
    # CuPy installed on a machine with no NVIDIA driver: CUDA's own error is "driver version
    # is insufficient", which suggests an upgrade of a driver that is not there
    out = run_python(_PROBE, path=_fake_cupy(tmp_path, driver=0, devices=_INSUFFICIENT))
    assert out["reason"].startswith("no NVIDIA GPU or driver found"), out
    assert "insufficient" not in out["reason"].lower() and "upgrade" not in out["reason"]
    assert out["raised"] == f"backend 'cuda' is unavailable: {out['reason']}"


def test_an_old_driver_is_named_with_what_to_do(tmp_path):
    out = run_python(_PROBE, path=_fake_cupy(tmp_path, driver=12020, devices=_INSUFFICIENT))
    assert "driver supports CUDA 12.2, older than the CUDA 13.0" in out["reason"], out
    assert "upgrade the driver" in out["reason"]


def test_a_driver_without_devices_says_no_gpu(tmp_path):
    out = run_python(_PROBE, path=_fake_cupy(tmp_path, devices="return 0"))
    assert out["reason"].startswith("no NVIDIA GPU found"), out


def test_without_cublas_the_probe_fails_rather_than_the_first_matmul(tmp_path):
    missing = "raise ImportError('Failure finding \"libcublasLt.so.13\"')"
    out = run_python(_PROBE, path=_fake_cupy(tmp_path, matmul=missing))
    assert out["reason"].startswith("CuPy cannot run cuBLAS, which a training step uses"), out
    assert "libcublasLt.so.13" in out["reason"]


_FAKE_CUPY_NO_NVRTC = {
    "__init__.py": "from . import cuda\nfloat32 = 'float32'\ndef ones(*a, **k):\n    return [0.0]\n",
    "cuda/__init__.py": "from . import nvrtc, runtime\nclass _Stream:\n    def synchronize(self):\n"
    "        pass\ndef get_current_stream():\n    return _Stream()\n",
    "cuda/runtime.py": "def getDeviceCount():\n    return 1\n",
    "cuda/nvrtc.py": "def getVersion():\n    raise OSError('libnvrtc.so.13: cannot open shared "
    "object file')\n",
}


def test_without_nvrtc_the_reason_says_so(tmp_path):
    for name, text in _FAKE_CUPY_NO_NVRTC.items():
        (tmp_path / "cupy" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cupy" / name).write_text(text)
    out = run_python(
        """
        import json
        from fastnn.backends import cuda
        print(json.dumps(cuda.probe()))
    """,
        path=tmp_path,
    )
    assert out.startswith("CuPy cannot load NVRTC") and "libnvrtc.so.13" in out
    assert 'pip install "cupy-cuda12x[ctk]"' in out


def test_real_cupy_is_probed_quickly_and_honestly():
    pytest.importorskip("cupy")
    out = run_python("""
        import json, time
        from fastnn.backends import cuda
        start = time.perf_counter()
        reason = cuda.probe()
        seconds = time.perf_counter() - start
        allocated = True
        try:
            import cupy
            cupy.ones(3).sum().get()
        except Exception:
            allocated = False
        print(json.dumps({"reason": reason, "seconds": seconds, "allocated": allocated}))
    """)
    # available exactly when a device can allocate; otherwise the reason says so
    assert (out["reason"] is None) == out["allocated"], out
    if out["reason"] is not None and not out["allocated"]:
        assert out["reason"].startswith(("no NVIDIA GPU", "the NVIDIA driver", "no usable CUDA")), (
            out
        )
    assert out["seconds"] < 30, out
