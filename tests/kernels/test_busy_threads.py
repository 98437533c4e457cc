"""fastnn's default thread count drops to one thread while other processes want the cores
(runtime._effective_threads); an explicit count holds. Results never depend on it."""

import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

runtime = pytest.importorskip("fastnn._kernels.runtime")


def _run(code, **env):
    environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tempfile.gettempdir(),  # not the checkout: `python -c` would import its fastnn/
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_default_count_is_adaptive_until_one_is_chosen():
    out = _run("""
        import fastnn
        from fastnn._kernels import runtime
        print(runtime.adaptive(), 1 <= runtime.threads_now() <= runtime.get_num_threads())
        fastnn.set_num_threads(2)
        print(runtime.adaptive(), runtime.threads_now(), runtime.get_num_threads())
        runtime.set_num_threads(2, False)
        print(runtime.adaptive())
    """)
    assert out == ["True", "True", "False", "2", "2", "True"]


def test_omp_num_threads_is_an_explicit_count():
    assert _run(
        """
        from fastnn._kernels import runtime
        print(runtime.adaptive(), runtime.get_num_threads(), runtime.threads_now())
    """,
        OMP_NUM_THREADS="2",
    ) == ["False", "2", "2"]


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="needs Linux's /proc")
def test_busy_machine_gets_one_thread_and_the_same_bits():
    """Other runnable processes beyond the free cores: the default count runs one thread."""
    out = _run("""
        import multiprocessing, os, time
        import numpy as np
        from fastnn._kernels import runtime, gemm

        def burn():
            while True:
                pass

        if __name__ == "__main__":
            runtime.set_num_threads(2, False)
            a = np.random.default_rng(0).standard_normal((300, 300)).astype(np.float32)
            quiet = gemm.matmul(a, a)
            burners = [multiprocessing.Process(target=burn, daemon=True)
                       for _ in range(os.cpu_count() + 1)]
            for p in burners:
                p.start()
            time.sleep(0.5)
            seen = set()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and 1 not in seen:
                seen.add(runtime.threads_now())
                time.sleep(0.11)
            busy = gemm.matmul(a, a)
            for p in burners:
                p.terminate()
            print(1 in seen, busy.tobytes() == quiet.tobytes())
    """)
    assert out == ["True", "True"]
