"""Shared fixtures for `pytest benchmarks --benchmark-only`.

Benchmark modules are bench_*.py (collected by the hook below, never by a plain `pytest`).
Benchmarks run against the *installed* fastnn (`pip install .`), like the tests. MNIST is loaded
once per session as float32 in [0, 1]; every model starts from the weights of
`Workload.initial_params(SEED)`, so fastnn, NumPy-from-scratch and PyTorch do the same work.

By default the session runs the epochs and the inference benchmarks and ends with one summary
table (summary.py) instead of pytest-benchmark's tables; `--sweeps` adds the long sweeps (every
kernel, GEMM and conv shape, single training steps) and pytest-benchmark's own tables.

Options:
  --sweeps           also the sweeps (benchmarks marked `sweep`) and pytest-benchmark's tables
  --epoch-rounds N   rounds of each one-epoch benchmark (default 1; 3 for the issue's medians)
  --workloads a,b    only these workloads (names in workloads.WORKLOADS)
"""

import os
import sys

import numpy as np
import pytest

# The helper modules sit beside this file; the source tree itself is never put on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import machine  # noqa: E402
import summary  # noqa: E402
import workloads as W  # noqa: E402

# The sweeps: whole modules of them, and the tests marked `sweep` elsewhere.
SWEEP_MODULES = ("bench_kernels.py", "bench_gemm.py", "bench_conv.py")
RESULTS = summary.Results()


def pytest_addoption(parser):
    group = parser.getgroup("fastnn benchmarks")
    group.addoption(
        "--epoch-rounds", type=int, default=1, help="rounds of each one-epoch benchmark (default 1)"
    )
    group.addoption(
        "--workloads",
        default=",".join(W.WORKLOADS),
        help="comma-separated workloads to run (default: all)",
    )
    group.addoption(
        "--sweeps",
        action="store_true",
        help="also run the long sweeps (kernels, GEMM and conv shapes, training "
        "steps) and print pytest-benchmark's own tables",
    )


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    config.addinivalue_line("markers", "sweep: a long sweep, run only with --sweeps")
    config._fastnn_load_start = _load()
    bench = getattr(config, "_benchmarksession", None)
    if bench is not None and not config.getoption("--sweeps"):
        # dozens of tables, up to 250 columns wide: the summary table replaces them
        bench.display = lambda terminalreporter: None


def _load():
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, config):
    """The one summary table, after everything else pytest prints."""
    if not RESULTS:
        return
    import fastnn

    threads = fastnn.get_num_threads()
    isa, peak = machine.best_isa_peak(threads=threads)
    try:  # fastnn's default count runs one thread while other processes want the cores
        from fastnn._kernels import runtime

        adaptive = " (1 while busy)" if runtime.adaptive() and threads > 1 else ""
    except ImportError:
        adaptive = ""
    header = [
        f"fastnn {fastnn.__version__}: GEMM {machine.gemm_isa()}, {threads} threads{adaptive}; "
        f"NumPy BLAS {machine.blas_summary()}"[: summary.WIDTH],
        f"load average {config._fastnn_load_start:.1f} at the start, {_load():.1f} at the "
        f"end, on {machine.cpu_count()} cores (timings on a busy machine are inflated)",
    ]
    terminalreporter.write_sep("=", "fastnn benchmark summary")
    for line in summary.table(RESULTS, isa, peak, header):
        terminalreporter.write_line(line)


def pytest_report_header(config):
    """Which fastnn is under test and which code paths it runs; `python -m pytest` from the
    repository root would import the unbuilt source tree instead of the installed package."""
    try:
        import fastnn
        from fastnn import backends
    except ImportError as exc:
        return [f"fastnn is not importable ({exc}): pip install . first"]
    cpu = backends.available()["cpu"]
    info = machine.summary()
    return [
        f"fastnn {fastnn.__version__} from {os.path.dirname(fastnn.__file__)}; cpu backend: "
        f"{'ok' if cpu else cpu.reason}",
        f"fastnn GEMM ISA: {info['fastnn_gemm_isa']}; NumPy BLAS: {info['blas']}; "
        f"OPENBLAS env: {info['openblas_env']}",
    ]


def pytest_collect_file(file_path, parent):
    """Benchmark modules are named bench_*.py, so that a plain `pytest` (tests/) never runs
    them; collect them when pytest is pointed at this folder."""
    if parent.session.isinitpath(file_path):
        return None  # named on the command line: pytest collects it already
    if file_path.suffix == ".py" and file_path.name.startswith("bench_"):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_benchmark_update_machine_info(config, machine_info):
    """The BLAS and GEMM paths that ran, and the measured FMA peak, in the saved JSON."""
    machine_info["fastnn"] = machine.summary(with_peak=True)


def pytest_collection_modifyitems(config, items):
    chosen = {w.strip() for w in config.getoption("--workloads").split(",") if w.strip()}
    unknown = chosen - set(W.WORKLOADS)
    if unknown:
        raise pytest.UsageError(
            f"--workloads: unknown {sorted(unknown)}; expected some of {sorted(W.WORKLOADS)}"
        )
    sweeps = config.getoption("--sweeps")
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("workload") if callspec else None
        unchosen = name is not None and name not in chosen
        is_sweep = item.path.name in SWEEP_MODULES or item.get_closest_marker("sweep")
        (drop if unchosen or (is_sweep and not sweeps) else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def mnist():
    """(x (60000, 784) float32 in [0, 1], y (60000,) int64): the training set, loaded once."""
    import fastnn

    (x, y), _ = fastnn.datasets.mnist()
    x = (x.reshape(len(x), -1) * np.float32(1 / 255)).astype(np.float32)
    return x, y.astype(np.int64)


@pytest.fixture(scope="session")
def paths():
    """Which GEMM/BLAS paths run, for each benchmark's extra_info."""
    info = machine.summary()
    return {"fastnn_gemm_isa": info["fastnn_gemm_isa"], "blas": info["blas"]}


@pytest.fixture
def record(benchmark, paths):
    """record(flops=..., samples=..., summary=(workload, measure)) after a benchmark: stores the
    code paths, and GFLOP/s and samples/s from the median time, in the benchmark's extra_info;
    with `summary`, the median goes into the session's summary table too."""

    def _record(flops=None, samples=None, summary=None, **extra):
        benchmark.extra_info.update(paths)
        benchmark.extra_info.update(extra)
        stats = getattr(benchmark, "stats", None)
        median = stats.stats.median if stats is not None else None
        if flops is not None:
            benchmark.extra_info["gflop"] = flops / 1e9
            if median:
                benchmark.extra_info["gflops_per_s"] = round(flops / median / 1e9, 2)
        if samples is not None and median:
            benchmark.extra_info["samples_per_s"] = round(samples / median, 1)
        if summary is not None and median:
            workload, measure = summary
            RESULTS.add(workload, measure, extra.get("impl"), median, flops)

    return _record


@pytest.fixture(scope="session")
def torch_impl():
    """The PyTorch module of this folder, or a skip when torch is not importable here."""
    import torch_impl as impl

    if not impl.available():
        pytest.skip(impl.why_unavailable())
    impl.setup_threads()
    return impl


def backend_or_skip(name):
    from fastnn import backends

    try:
        return backends.get(name)
    except backends.BackendUnavailable as exc:
        pytest.skip(str(exc))
