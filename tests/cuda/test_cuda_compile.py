"""Every kernel file compiles for the GPUs we target, without a GPU: through NVRTC with the
options CuPy's RawModule uses (NVRTC is what compiles them at run time), and through nvcc with
every warning an error. Both, because each accepts code the other refuses."""

import os
import shutil
import subprocess

import pytest

import nvrtc_compile  # tests/cuda/harness (pytest pythonpath)
from fastnn.backends.cuda import sources


@pytest.fixture(scope="session")
def nvrtc():
    path = nvrtc_compile.find_library()
    if path is None:
        pytest.skip("no NVRTC library (pip install nvidia-cuda-nvrtc, part of the test extra)")
    return nvrtc_compile.Nvrtc(path)


@pytest.mark.parametrize("arch", sources.CHECKED_ARCHS)
@pytest.mark.parametrize("family", sources.FAMILIES)
def test_nvrtc_compiles_with_cupys_options(nvrtc, family, arch):
    options = [*sources.CUPY_NVRTC_OPTIONS, f"-arch=sm_{arch}"]
    size, log = nvrtc.compile(sources.source(family), f"{family}.cu", options)
    assert size > 0, f"NVRTC {nvrtc.version()} failed on {family}.cu for sm_{arch}:\n{log}"
    assert "warning" not in log.lower(), f"NVRTC warned on {family}.cu for sm_{arch}:\n{log}"


def test_nvrtc_check_can_fail(nvrtc):
    # INFINITY is a macro nvcc's headers give and NVRTC lacks: the reason both are checked
    size, log = nvrtc.compile(
        'extern "C" __global__ void k(float* a) { a[0] = INFINITY; }',
        "bad.cu",
        [*sources.CUPY_NVRTC_OPTIONS, "-arch=sm_80"],
    )
    assert size == 0 and "INFINITY" in log


@pytest.fixture(scope="session")
def nvcc():
    path = shutil.which("nvcc") or next(
        (
            p
            for p in (
                os.path.join(os.environ.get("CUDA_PATH", ""), "bin", "nvcc"),
                "/usr/local/cuda/bin/nvcc",
            )
            if os.path.isfile(p)
        ),
        None,
    )
    if path is None:
        pytest.skip("nvcc not found")
    return path


@pytest.fixture(scope="session")
def nvcc_results(nvcc, tmp_path_factory):
    """{family: (command, returncode, output)}, the compiles run side by side."""
    out = tmp_path_factory.mktemp("nvcc")
    running = {}
    for family in sources.FAMILIES:
        command = [
            nvcc,
            "-std=c++17",
            "-ftz=true",
            "-fatbin",
            "--Werror",
            "all-warnings",
            *(f"-gencode=arch=compute_{a},code=sm_{a}" for a in sources.CHECKED_ARCHS),
            str(sources.path(family)),
            "-o",
            str(out / f"{family}.fatbin"),
        ]
        running[family] = (
            command,
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True),
        )
    return {
        family: (command, process.wait(), process.communicate()[0])
        for family, (command, process) in running.items()
    }


@pytest.mark.parametrize("family", sources.FAMILIES)
def test_nvcc_compiles_without_warnings(nvcc_results, family):
    command, returncode, output = nvcc_results[family]
    assert returncode == 0, f"{' '.join(command)}\n{output}"


def test_cupy_rawmodule_uses_the_options_we_check(monkeypatch):
    """Drive CuPy's own RawModule compile path (as far as it goes without a driver) and record
    the NVRTC options it passes: they must be the ones the NVRTC test above uses."""
    cupy = pytest.importorskip("cupy")
    from cupy.cuda import compiler

    try:
        from cupy._core.core import compile_with_cache

        program = compiler._NVRTCProgram
    except (ImportError, AttributeError) as exc:
        pytest.skip(
            f"CuPy {cupy.__version__} internals changed ({exc}); the check was written "
            f"for CuPy {sources.CHECKED_CUPY_VERSION}"
        )
    recorded = []
    original = program.compile

    def record(self, options=(), log_stream=None):
        recorded.append(tuple(options))
        return original(self, options, log_stream)

    monkeypatch.setenv("CUPY_CACHE_IN_MEMORY", "1")  # compile for real, never from a disk cache
    monkeypatch.setattr(program, "compile", record)
    monkeypatch.setattr(compiler, "_get_arch", lambda: "80")
    monkeypatch.setattr(
        compiler,
        "_get_arch_for_options_for_nvrtc",
        lambda arch=None: (f"-arch=sm_{arch or 80}", "cubin"),
    )
    try:
        # RawModule(code=...) compiles through this call (without CuPy's own header prepended)
        compile_with_cache(sources.source("loss"), (), prepend_cupy_headers=False)
    except compiler.CompileException:
        raise
    except Exception:
        pass  # loading the compiled cubin needs a driver; the compile itself is done
    final = [opts for opts in recorded if any(o.startswith("-arch=sm_") for o in opts)]
    assert final, f"CuPy {cupy.__version__} compiled nothing through NVRTC: {recorded}"
    options = [o for o in final[-1] if not o.startswith("-I")]
    assert sorted(options) == sorted([*sources.CUPY_NVRTC_OPTIONS, "-arch=sm_80"]), (
        f"CuPy {cupy.__version__} compiles RawModule code with {options}; update "
        f"sources.CUPY_NVRTC_OPTIONS (checked against CuPy {sources.CHECKED_CUPY_VERSION})"
    )
