"""Build the Cython kernels.

Directives are set once here. FASTNN_DEBUG=1 turns bounds and wraparound checks back on (and
-O0 -g) for debugging builds. OpenMP is used when a test compile with -fopenmp succeeds;
otherwise the build is serial and says so.

What keeps the build short and the wheel small (both measured in the README):
- -g0: Python's own CFLAGS carry -g, which made 80% of each module's size debug information
  and a third of the compile time; FASTNN_DEBUG=1 builds keep it.
- Cython's shared utility module (fastnn._kernels._cyutility): the memoryview and other
  helper code Cython would otherwise generate, and the compiler compile, once per module.
- The extensions compile in parallel, one process per core (FASTNN_BUILD_JOBS overrides).
"""

import os
import shutil
import subprocess
import sys
import tempfile
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTNN_DEBUG", "0") not in ("", "0")
BUILD_JOBS = int(os.environ.get("FASTNN_BUILD_JOBS", "0")) or os.cpu_count() or 1
SHARED_UTILITY = "fastnn._kernels._cyutility"

# C sources compiled into a given extension module, beside its .pyx.
_SRC = os.path.join("fastnn", "_kernels", "src")
EXTRA_SOURCES = {
    "fastnn._kernels.gemm": [
        os.path.join(_SRC, name)
        for name in ("gemm.c", "gemm_avx512.c", "gemm_avx2.c", "gemm_portable.c", "gemm_chain.c")
    ],
    "fastnn._kernels.conv": [
        os.path.join(_SRC, name) for name in ("conv_isa.c", "conv_winograd.c", "conv_direct.c")
    ],
}


def openmp_flags():
    """Return (compile_args, link_args) for OpenMP, or ([], []) when the compiler lacks it."""
    if os.environ.get("FASTNN_NO_OPENMP"):
        return [], []
    cc = os.environ.get("CC", "cc")
    if sys.platform == "darwin":
        candidates = [(["-Xpreprocessor", "-fopenmp"], ["-lomp"])]
    else:
        candidates = [(["-fopenmp"], ["-fopenmp"])]
    source = "#include <omp.h>\nint main(void){int n=0;\n#pragma omp parallel\n{n=omp_get_num_threads();}\nreturn n<1;}\n"
    for compile_args, link_args in candidates:
        tmp = tempfile.mkdtemp()
        try:
            src = os.path.join(tmp, "omp_test.c")
            with open(src, "w") as f:
                f.write(source)
            cmd = [cc, *compile_args, src, "-o", os.path.join(tmp, "omp_test"), *link_args]
            result = subprocess.run(cmd, capture_output=True)
            if result.returncode == 0:
                return compile_args, link_args
        except OSError:
            pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        "WARNING: fastnn: the compiler does not support OpenMP; building serial kernels.",
        file=sys.stderr,
    )
    return [], []


def drop_stale_generated_c():
    """Remove .c files Cython generated before the shared utility module: cythonize would keep
    them (their .pyx is older) and build_ext would keep their modules, so an in-place build
    from before it would never drop its per-module utility code and debug information."""
    for c_file in glob(os.path.join("fastnn", "_kernels", "*.c")):
        if os.path.basename(c_file) == SHARED_UTILITY.rsplit(".", 1)[1] + ".c":
            continue
        with open(c_file, encoding="utf-8", errors="replace") as f:
            if SHARED_UTILITY not in f.read():
                os.remove(c_file)


def extensions():
    drop_stale_generated_c()
    omp_compile, omp_link = openmp_flags()
    base_compile = ["-O0", "-g"] if DEBUG else ["-O3", "-g0"]
    # -fno-math-errno only stops libm calls setting errno (which nothing reads), so sqrt can be
    # vectorised; unlike -ffast-math it keeps IEEE inf/NaN semantics.
    base_compile += [
        "-fno-strict-aliasing",
        "-fno-math-errno",
        "-Wno-unused-function",
        "-Wno-unreachable-code",
    ]
    exts = [
        Extension(
            SHARED_UTILITY,
            [SHARED_UTILITY.replace(".", os.sep) + ".c"],
            extra_compile_args=base_compile,
        )
    ]
    for pyx in sorted(glob(os.path.join("fastnn", "_kernels", "*.pyx"))):
        module = pyx[:-4].replace(os.sep, ".")
        exts.append(
            Extension(
                module,
                [pyx, *EXTRA_SOURCES.get(module, [])],
                include_dirs=[numpy.get_include(), os.path.join("fastnn", "_kernels", "src")],
                # headers and .pxd files: an edit to one rebuilds the modules (setuptools does not
                # scan includes itself, so a stale object would otherwise survive it)
                depends=sorted(
                    glob(os.path.join("fastnn", "_kernels", "src", "*.h"))
                    + glob(os.path.join("fastnn", "_kernels", "*.pxd"))
                ),
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
                extra_compile_args=base_compile + omp_compile,
                extra_link_args=omp_link,
            )
        )
    directives = {
        "language_level": 3,
        "boundscheck": DEBUG,
        "wraparound": DEBUG,
        "initializedcheck": DEBUG,
        "cdivision": not DEBUG,
        "embedsignature": True,
    }
    # Cython's worker pool is only used where processes fork (spawn would re-run this file)
    nthreads = BUILD_JOBS if sys.platform.startswith("linux") else 0
    return cythonize(
        exts,
        compiler_directives=directives,
        nthreads=nthreads,
        shared_utility_qualified_name=SHARED_UTILITY,
        compile_time_env={"FASTNN_OPENMP": bool(omp_compile)},
    )


# `build_ext -j N` on the command line still wins over this default
setup(ext_modules=extensions(), options={"build_ext": {"parallel": BUILD_JOBS}})
