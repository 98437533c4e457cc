"""How many threads fastnn uses: its own kernels (OpenMP) and the BLAS under NumPy.

The default is OpenMP's, which honours OMP_NUM_THREADS.

A process made by fork (os.fork, multiprocessing's "fork" start method, gunicorn's workers)
after its parent ran fastnn's kernels on several threads runs them on one thread: GNU OpenMP
(libgomp) is not fork-safe. Its thread pool is recorded in the child's memory but its threads
do not exist there, so the child's first parallel region with more than one thread would wait
for them forever. A region of one thread never touches the pool, and the kernels give bitwise
the same results at any thread count, so such a child computes exactly what its parent would.
A child forked before any multi-threaded kernel ran keeps the parent's thread count. For several
threads per worker process, start the workers with "spawn" or "forkserver", or fork them before
the parent computes anything.
"""

import operator
import os
import warnings

try:
    from fastnn._kernels import runtime as _runtime
except ImportError:  # kernels not built: only the NumPy backend (and its BLAS) can run
    _runtime = None

# More threads than this is a mistake (OpenMP would fail to start them, or run out of memory):
# refused with ValueError rather than crashing in the first parallel loop.
MAX_THREADS = 1024

_blas_limiter = None
# True in a process forked after its parent's kernels ran on several threads: kernels stay on
# one thread there.
_pool_lost_in_fork = False


def _single_threaded_after_fork():
    """os.register_at_fork child hook: an inherited OpenMP pool is unusable (see above)."""
    global _pool_lost_in_fork
    if _runtime is not None and _runtime.pool_may_exist():
        _pool_lost_in_fork = True
        _runtime.set_num_threads(1)


if hasattr(os, "register_at_fork"):  # POSIX
    os.register_at_fork(after_in_child=_single_threaded_after_fork)


def set_num_threads(n: int) -> None:
    """Use `n` threads (1 to MAX_THREADS) in fastnn's kernels and in the BLAS NumPy calls."""
    global _blas_limiter
    if isinstance(n, bool):
        raise TypeError("n must be an integer, got bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an integer, got {type(n).__name__}") from None
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"n must be in [1, {MAX_THREADS}], got {n}")
    if _runtime is not None:
        kernel_threads = n
        if _pool_lost_in_fork and n > 1:
            warnings.warn(
                f"fastnn runs its kernels on one thread in a forked process (GNU "
                f"OpenMP's thread pool does not survive fork), not {n}; start "
                f"workers with 'spawn' or 'forkserver' for more",
                RuntimeWarning,
                stacklevel=2,
            )
            kernel_threads = 1
        _runtime.set_num_threads(kernel_threads)
    from threadpoolctl import threadpool_limits

    if _blas_limiter is not None:
        _blas_limiter.restore_original_limits()
    _blas_limiter = threadpool_limits(limits=n, user_api="blas")


def get_num_threads() -> int:
    """Threads fastnn's kernels use (1 when they were built without OpenMP)."""
    if _runtime is None:
        return 1
    return _runtime.get_num_threads()


def openmp_enabled():
    """True when fastnn's kernels were compiled with OpenMP."""
    return _runtime is not None and _runtime.openmp_enabled()
