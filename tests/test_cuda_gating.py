"""Whether the cuda backend says it can run, and why not: with CuPy installed or not (each
simulated in a fresh interpreter), with a driver or not. `import fastnn` never imports CuPy."""
import json
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

# A stand-in CuPy whose first allocation fails as CuPy's does on a machine with no driver.
_FAKE_CUPY_NO_DRIVER = '''
class CUDARuntimeError(RuntimeError):
    pass
float32 = "float32"
def zeros(*args, **kwargs):
    raise CUDARuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient "
                           "for CUDA runtime version")
'''


def run_python(code, path=None):
    """Run `code` in a fresh interpreter; returns what it printed as JSON on its last line."""
    env_path = f"import sys; sys.path.insert(0, {str(path)!r})\n" if path else ""
    result = subprocess.run([sys.executable, "-c", env_path + textwrap.dedent(code)],
                            capture_output=True, text=True, timeout=120)
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
    out = run_python(_HIDE_CUPY + """
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
""")
    assert out["probe"].startswith("CuPy is not installed")
    assert "pip install fastnn[cuda12]" in out["probe"] and "fastnn[cuda13]" in out["probe"]
    assert out["ok"] is False and out["reason"] == out["probe"]
    assert out["raised"] == f"backend 'cuda' is unavailable: {out['probe']}"
    assert "\n" not in out["raised"]  # one line, fit for the examples' exit message
    assert out["numpy"] is True


def test_without_a_driver_the_reason_says_no_usable_device(tmp_path):
    (tmp_path / "cupy").mkdir()
    (tmp_path / "cupy" / "__init__.py").write_text(_FAKE_CUPY_NO_DRIVER)
    out = run_python("""
        import json
        import fastnn.backends as backends
        try:
            backends.get("cuda")
            raised = None
        except backends.BackendUnavailable as exc:
            raised = str(exc)
        print(json.dumps({"reason": backends.available()["cuda"].reason, "raised": raised}))
    """, path=tmp_path)
    assert out["reason"].startswith("no usable CUDA device: CUDARuntimeError: "
                                    "cudaErrorInsufficientDriver")
    assert out["raised"] == f"backend 'cuda' is unavailable: {out['reason']}"


_FAKE_CUPY_NO_NVRTC = {
    "__init__.py": "from . import cuda\nfloat32 = 'float32'\ndef zeros(*a, **k):\n    return [0.0]\n",
    "cuda/__init__.py": "from . import nvrtc\nclass _Stream:\n    def synchronize(self):\n"
                        "        pass\ndef get_current_stream():\n    return _Stream()\n",
    "cuda/nvrtc.py": "def getVersion():\n    raise OSError('libnvrtc.so.13: cannot open shared "
                     "object file')\n",
}


def test_without_nvrtc_the_reason_says_so(tmp_path):
    for name, text in _FAKE_CUPY_NO_NVRTC.items():
        (tmp_path / "cupy" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cupy" / name).write_text(text)
    out = run_python("""
        import json
        from fastnn.backends import cuda
        print(json.dumps(cuda.probe()))
    """, path=tmp_path)
    assert out.startswith("CuPy cannot load NVRTC") and "libnvrtc.so.13" in out
    assert "pip install fastnn[cuda12]" in out


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
    if out["reason"] is not None:
        assert out["reason"].startswith("no usable CUDA device"), out
    assert out["seconds"] < 30, out
