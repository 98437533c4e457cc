"""What every kernel module shares at run time: the thread count and whether OpenMP is in.

Every kernel entry point takes the thread count as an argument, `nthreads` (0: the count stored
here, which fastnn.set_num_threads sets), resolves it once with resolve_threads() and passes the
result to each prange and GEMM, instead of relying on the OpenMP default: omp_set_num_threads
only affects the thread that calls it, while a count stored here holds for kernels called from
any Python thread.
"""
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy
from cython.parallel cimport prange

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    static int fastnn_openmp_enabled(void) { return 1; }
    static int fastnn_omp_max_threads(void) { return omp_get_max_threads(); }
    static void fastnn_omp_set_threads(int n) { omp_set_num_threads(n); }
    #else
    static int fastnn_openmp_enabled(void) { return 0; }
    static int fastnn_omp_max_threads(void) { return 1; }
    static void fastnn_omp_set_threads(int n) { (void)n; }
    #endif
    """
    int fastnn_openmp_enabled() noexcept nogil
    int fastnn_omp_max_threads() noexcept nogil
    void fastnn_omp_set_threads(int n) noexcept nogil

# omp_get_max_threads() already honours OMP_NUM_THREADS (capped as fastnn.set_num_threads is).
cdef int _num_threads = min(max(1, fastnn_omp_max_threads()), 1024)


# Scratch buffers of the conv kernels are sized per thread: a bound keeps them finite.
cdef enum:
    MAX_KERNEL_THREADS = 256


# Whether a kernel may have run a parallel region of several threads in this process, so that
# GNU OpenMP's thread pool may exist: a process forked after that must stay on one thread
# (fastnn._threads). Set whenever a count above one is handed out, which over-approximates.
cdef bint _pool_may_exist = False


cdef int num_threads() noexcept nogil:
    global _pool_may_exist
    if _num_threads > 1:
        _pool_may_exist = True
    return _num_threads


cdef int resolve_threads(int nthreads) noexcept nogil:
    global _pool_may_exist
    cdef int n = nthreads if nthreads > 0 else _num_threads
    if n > 1:
        _pool_may_exist = True
    return n if n < MAX_KERNEL_THREADS else MAX_KERNEL_THREADS


cdef int threads_for(Py_ssize_t work, Py_ssize_t min_work, int nthreads) noexcept nogil:
    return resolve_threads(nthreads) if work >= min_work else 1


def pool_may_exist():
    """True once a kernel may have run on several OpenMP threads in this process."""
    return bool(_pool_may_exist)


def openmp_enabled():
    """True when the kernels were compiled with OpenMP (otherwise they run serially)."""
    return bool(fastnn_openmp_enabled())


def get_num_threads():
    """Threads the kernels use (always 1 in a build without OpenMP); the backends ask this
    before each conv and GEMM call, so it counts as handing the count out."""
    return num_threads()


def set_num_threads(int n):
    """Use `n` threads (>= 1) in every kernel; a build without OpenMP stays at 1."""
    global _num_threads
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not fastnn_openmp_enabled():
        n = 1
    _num_threads = n
    fastnn_omp_set_threads(n)


ctypedef fused float_bits:
    uint32_t
    uint64_t


cdef extern from "finite.h" nogil:
    bint fastnn_all_finite32(const uint32_t* bits, size_t n)
    bint fastnn_all_finite64(const uint64_t* bits, size_t n)


def all_finite_bits(const float_bits[::1] bits):
    """True when no float in the array is NaN or infinite; the array is passed as its raw bits
    (float32 viewed as uint32, float64 as uint64) so the exponent test is an integer test that
    vectorises without -ffast-math (src/finite.h)."""
    cdef Py_ssize_t n = bits.shape[0]
    cdef bint finite
    if n == 0:
        return True
    with nogil:
        if float_bits is uint32_t:
            finite = fastnn_all_finite32(&bits[0], n)
        else:
            finite = fastnn_all_finite64(&bits[0], n)
    return finite


# Below this many bytes a gather runs on one thread.
cdef Py_ssize_t GATHER_PARALLEL_BYTES = 65536


def gather_rows(const unsigned char[:, ::1] src, const int64_t[::1] index,
                unsigned char[:, ::1] out, int nthreads=0):
    """out[i] = src[index[i]], rows as raw bytes (any dtype, viewed as uint8 rows). The rows
    are random places in memory, each a wait on DRAM: the threads split them, so more of those
    waits overlap. Indices outside [0, rows) raise IndexError before anything is copied."""
    cdef Py_ssize_t n = index.shape[0], rows = src.shape[0], width = src.shape[1], i
    cdef int threads
    if out.shape[0] != n or out.shape[1] != width:
        raise ValueError(f"out must have shape ({n}, {width}) (bytes), got "
                         f"({out.shape[0]}, {out.shape[1]})")
    for i in range(n):
        if index[i] < 0 or index[i] >= rows:
            raise IndexError(f"index {index[i]} is outside [0, {rows})")
    if width == 0:
        return
    threads = resolve_threads(nthreads) if n * width >= GATHER_PARALLEL_BYTES else 1
    with nogil:
        for i in prange(n, schedule="static", num_threads=threads):
            memcpy(&out[i, 0], &src[index[i], 0], width)
