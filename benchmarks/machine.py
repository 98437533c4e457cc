"""What this machine can do and which code paths ran: the FMA peak, the BLAS, fastnn's GEMM ISA.

The peak is measured, not looked up: a tiny C loop of independent fused multiply-adds, compiled
at run time with the system C compiler (one function per ISA, each with its own
``__attribute__((target(...)))`` so the build needs no -march flag), run on one thread and on
every core. It is the ceiling a GEMM can approach, so achieved GFLOP/s are reported against it.
When no C compiler is available the peak falls back to the best large sgemm NumPy reaches, a
lower bound that says so.
"""

import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

_PROBE_SOURCE = r"""
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>

/* Independent accumulator chains, written out so that they live in registers: 12 cover FMA
   latency x throughput on current x86 cores (4-5 cycles x 2 pipes), and 12 + 2 constants fit
   in the 16 ymm registers of AVX2. Each chain starts from its own value: chains that start
   equal compute equal values, and the compiler merged them (GCC 12 kept 2 of 12), so the loop
   ran latency-bound and the count of 12 chains overstated the peak by half again or more. */
#define CHAINS 12
#define STEP(f, c) acc##c = f(acc##c, m, a)
#define ALL(f) STEP(f,0); STEP(f,1); STEP(f,2); STEP(f,3); STEP(f,4); STEP(f,5); \
               STEP(f,6); STEP(f,7); STEP(f,8); STEP(f,9); STEP(f,10); STEP(f,11)
#define SUM(add) add(add(add(add(acc0, acc1), add(acc2, acc3)), add(add(acc4, acc5), add(acc6, acc7))), \
                     add(add(acc8, acc9), add(acc10, acc11)))

#define START(set1, c) set1(1.0f + (c) * 1e-3f)
#define STARTS(set1) START(set1, 0), acc1 = START(set1, 1), acc2 = START(set1, 2), \
    acc3 = START(set1, 3), acc4 = START(set1, 4), acc5 = START(set1, 5), acc6 = START(set1, 6), \
    acc7 = START(set1, 7), acc8 = START(set1, 8), acc9 = START(set1, 9), \
    acc10 = START(set1, 10), acc11 = START(set1, 11)

__attribute__((target("avx512f"))) static double fma_avx512(long iters) {
    __m512 m = _mm512_set1_ps(0.999999f), a = _mm512_set1_ps(1e-7f);
    __m512 acc0 = STARTS(_mm512_set1_ps);
    for (long i = 0; i < iters; i++) { ALL(_mm512_fmadd_ps); }
    return _mm512_reduce_add_ps(SUM(_mm512_add_ps));
}

__attribute__((target("avx2,fma"))) static double fma_avx2(long iters) {
    __m256 m = _mm256_set1_ps(0.999999f), a = _mm256_set1_ps(1e-7f);
    __m256 acc0 = STARTS(_mm256_set1_ps);
    for (long i = 0; i < iters; i++) { ALL(_mm256_fmadd_ps); }
    float out[8], sum = 0;
    _mm256_storeu_ps(out, SUM(_mm256_add_ps));
    for (int j = 0; j < 8; j++) sum += out[j];
    return sum;
}

/* usage: probe ISA THREADS ITERS  ->  prints GFLOP/s (fp32) over all threads */
int main(int argc, char **argv) {
    __builtin_cpu_init();
    int avx512 = strcmp(argv[1], "avx512") == 0;
    if (avx512 ? !__builtin_cpu_supports("avx512f")
               : !(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))) {
        printf("unsupported\n");
        return 0;
    }
    int threads = atoi(argv[2]);
    long iters = atol(argv[3]);
    double best = 0, sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = omp_get_wtime();
        #pragma omp parallel num_threads(threads) reduction(+:sink)
        sink += avx512 ? fma_avx512(iters) : fma_avx2(iters);
        double dt = omp_get_wtime() - t0;
        double lanes = avx512 ? 16 : 8;
        double gflops = 2.0 * lanes * CHAINS * (double)iters * threads / dt / 1e9;
        if (gflops > best) best = gflops;
    }
    printf("%.1f %g\n", best, sink);
    return 0;
}
"""


def cpu_count():
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _compile_probe(directory):
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler"
    src = os.path.join(directory, "fma_probe.c")
    exe = os.path.join(directory, "fma_probe")
    with open(src, "w") as f:
        f.write(_PROBE_SOURCE)
    result = subprocess.run([cc, "-O2", "-fopenmp", src, "-o", exe], capture_output=True, text=True)
    if result.returncode != 0:
        return None, f"{cc} failed: {result.stderr.strip()[:200]}"
    return exe, None


@functools.lru_cache(maxsize=None)
def fma_peak(iters=20_000_000):
    """Measured fp32 FMA peak in GFLOP/s: {"avx512": {1: .., n: ..} or None, "avx2": .., "source": ..}.

    "source" says how it was obtained ("fma-probe" or "numpy-sgemm (lower bound)"). An ISA this
    CPU lacks maps to None.
    """
    threads = cpu_count()
    peaks = {"threads": threads}
    with tempfile.TemporaryDirectory(prefix="fastnn-probe-") as tmp:
        exe, why = _compile_probe(tmp)
        if exe is not None:
            for isa in ("avx512", "avx2"):
                peaks[isa] = None
                for n in sorted({1, threads}):
                    out = subprocess.run(
                        [exe, isa, str(n), str(iters)], capture_output=True, text=True
                    ).stdout.split()
                    if not out or out[0] == "unsupported":
                        break
                    peaks.setdefault(isa, {})
                    peaks[isa] = {**(peaks[isa] or {}), n: float(out[0])}
            peaks["source"] = "fma-probe"
            return peaks
    best = best_sgemm_gflops()
    peaks.update(
        avx512=None,
        avx2=None,
        sgemm={threads: best},
        source=f"numpy-sgemm (lower bound; probe unavailable: {why})",
    )
    return peaks


def best_isa_peak(peaks=None, threads=None):
    """(isa name, GFLOP/s) of the widest FMA the CPU runs, on `threads` threads (default: all
    cores; a count that was not probed is scaled from the all-core figure)."""
    peaks = peaks or fma_peak()
    for isa in ("avx512", "avx2", "sgemm"):
        measured = peaks.get(isa)
        if measured:
            cores = peaks.get("threads") or max(measured)
            if threads is None:
                threads = cores
            if threads in measured:
                return isa, measured[threads]
            return isa, max(measured.values()) * min(threads, cores) / cores
    return "unknown", float("nan")


def best_sgemm_gflops(n=2048, repeats=3):
    """GFLOP/s of NumPy's float32 matmul on an n x n x n product (best of `repeats`)."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n**3 / best / 1e9


def blas_info():
    """threadpoolctl's view of the loaded BLAS/OpenMP libraries: [{"internal_api", "version",
    "architecture" (the BLAS kernel, e.g. Haswell or SkylakeX), "num_threads", "filepath"}]."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl is not installed"}]
    keep = (
        "user_api",
        "internal_api",
        "version",
        "architecture",
        "threading_layer",
        "num_threads",
        "prefix",
    )
    return [{k: v for k, v in lib.items() if k in keep} for lib in threadpool_info()]


def blas_summary(info=None):
    """One line: the BLAS kernel NumPy runs, e.g. "openblas 0.3.30 Haswell x2"."""
    info = blas_info() if info is None else info
    parts = [
        f"{lib.get('internal_api')} {lib.get('version') or ''} {lib.get('architecture') or ''}"
        f" x{lib.get('num_threads')}".replace("  ", " ")
        for lib in info
        if lib.get("user_api") == "blas"
    ]
    return "; ".join(parts) or "no BLAS found by threadpoolctl"


def gemm_isa():
    """The ISA fastnn's own GEMM runs ("avx512", "avx2", "portable"), or why it is unknown."""
    try:
        from fastnn._kernels import gemm
    except ImportError as exc:
        return f"n/a (fastnn._kernels.gemm: {exc.__class__.__name__})"
    return gemm.isa()


def openblas_env():
    return {
        k: os.environ.get(k)
        for k in (
            "OPENBLAS_CORETYPE",
            "OPENBLAS_L2_SIZE",
            "OPENBLAS_NUM_THREADS",
            "OMP_NUM_THREADS",
        )
    }


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def summary(with_peak=False):
    """A JSON-able dict for benchmark extra_info and the compare.py header."""
    import fastnn

    info = {
        "cpu": cpu_model(),
        "cores": cpu_count(),
        "fastnn": fastnn.__version__,
        "fastnn_gemm_isa": gemm_isa(),
        "fastnn_threads": getattr(fastnn, "get_num_threads", lambda: None)(),
        "numpy": np.__version__,
        "blas": blas_summary(),
        "openblas_env": openblas_env(),
        "python": sys.version.split()[0],
    }
    if with_peak:
        info["fma_peak_gflops"] = fma_peak()
    return info


if __name__ == "__main__":
    print(json.dumps(summary(with_peak=True), indent=2))
