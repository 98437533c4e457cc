"""How many threads fastnn uses: its own kernels (OpenMP) and the BLAS under NumPy.

The default is OpenMP's, which honours OMP_NUM_THREADS.
"""
import operator

try:
    from fastnn._kernels import runtime as _runtime
except ImportError:  # kernels not built: only the NumPy backend (and its BLAS) can run
    _runtime = None

# More threads than this is a mistake (OpenMP would fail to start them, or run out of memory):
# refused with ValueError rather than crashing in the first parallel loop.
MAX_THREADS = 1024

_blas_limiter = None


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
        _runtime.set_num_threads(n)
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
