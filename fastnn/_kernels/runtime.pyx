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
from cython cimport floating

import os

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


# ---- a busy machine: one thread while other processes want the cores -------------------------
# Every parallel region ends at a barrier; with other runnable processes on the cores, one of
# fastnn's threads is often descheduled and the others wait for it (an MLP-128 epoch at load 5
# on 2 cores: 1.15 s on 2 threads, 0.51 s on 1). With fastnn's default count (neither
# set_num_threads nor OMP_NUM_THREADS chose one), kernels run on one thread while the
# machine's run queue, less fastnn's own running threads, holds as many tasks as there are
# cores beyond the ones fastnn would leave free; looked at every BUSY_CHECK_MS, and believed
# when BUSY_VOTES of the last BUSY_SAMPLES looks agree (a single look catches transients: a
# kernel worker, or one of fastnn's own threads going to sleep between the two reads; on a
# quiet VM they sent one epoch in three to one thread for 100 ms at a time, MLP 784-512-256
# epochs 0.86 -> 1.2-1.4 s). Results do not change: every kernel gives the same bits at any
# thread count.
cdef extern from *:
    """
    #include <dirent.h>
    #include <stdio.h>
    #include <stdlib.h>
    #include <string.h>
    #include <time.h>
    #include <unistd.h>
    static long long fastnn_monotonic_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    static int fastnn_online_cpus(void) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        return n > 0 ? (int)n : 1;
    }
    /* This process's runnable threads (/proc/self/task/N/stat state R), or -1. */
    static int fastnn_own_runnable(void) {
        DIR *dir;
        struct dirent *e;
        char path[64], buf[256];
        int own = 0;
        if ((dir = opendir("/proc/self/task")) == NULL)
            return -1;
        while ((e = readdir(dir)) != NULL) {
            FILE *t;
            char *close_paren;
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof path, "/proc/self/task/%.20s/stat", e->d_name);
            if ((t = fopen(path, "r")) == NULL)
                continue;
            if (fgets(buf, sizeof buf, t) != NULL && (close_paren = strrchr(buf, ')')) != NULL
                && close_paren[1] == ' ' && close_paren[2] == 'R')
                own++;
            fclose(t);
        }
        closedir(dir);
        return own;
    }
    /* Runnable tasks on the machine (4th field of /proc/loadavg) less this process's own
       runnable threads, or -1 where Linux's /proc is not. When that leaves more than
       `quiet_at_most` others, the own threads are counted again and the larger count taken:
       one of fastnn's threads that went to sleep between the two reads would otherwise count
       as another process. (The second count only then: a scan opens a file per thread.) */
    static int fastnn_other_runnable(int quiet_at_most) {
        FILE *f;
        double a, b, c;
        int running = -1, total, own, again;
        if ((own = fastnn_own_runnable()) < 0 || (f = fopen("/proc/loadavg", "r")) == NULL)
            return -1;
        if (fscanf(f, "%lf %lf %lf %d/%d", &a, &b, &c, &running, &total) != 5)
            running = -1;
        fclose(f);
        if (running < 0)
            return -1;
        if (running - own > quiet_at_most && (again = fastnn_own_runnable()) > own)
            own = again;
        return running > own ? running - own : 0;
    }
    """
    long long fastnn_monotonic_ms() noexcept nogil
    int fastnn_online_cpus() noexcept nogil
    int fastnn_other_runnable(int quiet_at_most) noexcept nogil

cdef enum:
    BUSY_CHECK_MS = 40
    BUSY_SAMPLES = 4   # the last this many looks (bits of _looks, newest lowest) ...
    BUSY_VOTES = 3     # ... of which this many busy switch to one thread, as many quiet back

# off once a count is chosen explicitly (set_num_threads, OMP_NUM_THREADS)
cdef bint _adaptive = not os.environ.get("OMP_NUM_THREADS")
cdef long long _next_check_ms = 0
cdef bint _busy = False
cdef unsigned int _looks = 0
cdef int _online_cpus = fastnn_online_cpus()


cdef int _effective_threads() noexcept nogil:
    """_num_threads, or 1 while the machine is busy (fastnn's default count only)."""
    global _next_check_ms, _busy, _looks
    cdef long long now
    cdef int others, votes
    cdef unsigned int looks
    if not _adaptive or _num_threads <= 1:
        return _num_threads
    now = fastnn_monotonic_ms()
    if now >= _next_check_ms:  # racing threads may both look: at worst one look is lost
        _next_check_ms = now + BUSY_CHECK_MS
        others = fastnn_other_runnable(_online_cpus - _num_threads)
        looks = ((_looks << 1) | (others >= 0 and others + _num_threads > _online_cpus)) \
            & ((1u << BUSY_SAMPLES) - 1)
        _looks = looks
        votes = 0
        while looks:
            votes += looks & 1
            looks >>= 1
        if votes >= BUSY_VOTES:
            _busy = True
        elif BUSY_SAMPLES - votes >= BUSY_VOTES:
            _busy = False
    return 1 if _busy else _num_threads


# Scratch buffers of the conv kernels are sized per thread: a bound keeps them finite.
cdef enum:
    MAX_KERNEL_THREADS = 256


# Whether a kernel may have run a parallel region of several threads in this process, so that
# GNU OpenMP's thread pool may exist: a process forked after that must stay on one thread
# (fastnn._threads). Set whenever a count above one is handed out, which over-approximates.
cdef bint _pool_may_exist = False


cdef int num_threads() noexcept nogil:
    global _pool_may_exist
    cdef int n = _effective_threads()
    if n > 1:
        _pool_may_exist = True
    return n


cdef int resolve_threads(int nthreads) noexcept nogil:
    global _pool_may_exist
    cdef int n = nthreads if nthreads > 0 else _effective_threads()
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
    """Threads the kernels use (always 1 in a build without OpenMP)."""
    global _pool_may_exist
    if _num_threads > 1:
        _pool_may_exist = True
    return _num_threads


def threads_now():
    """Threads a kernel called now with nthreads=0 runs: get_num_threads(), or 1 while the
    machine is busy with other processes and the count is fastnn's default."""
    return num_threads()


def adaptive():
    """Whether the count is fastnn's default, which drops to one thread on a busy machine."""
    return bool(_adaptive)


def set_num_threads(int n, bint explicit=True):
    """Use `n` threads (>= 1) in every kernel; a build without OpenMP stays at 1. An explicit
    count holds whatever the load; explicit=False makes `n` the default count again, which
    drops to one thread on a busy machine."""
    global _num_threads, _adaptive, _next_check_ms
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not fastnn_openmp_enabled():
        n = 1
    _num_threads = n
    _adaptive = not explicit
    _next_check_ms = 0
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


cdef int _gather_threads(const int64_t[::1] index, Py_ssize_t rows, Py_ssize_t width,
                         Py_ssize_t out_rows, Py_ssize_t out_width, str unit,
                         int nthreads) except -1:
    """The checks of a row gather (out of shape (len(index), width), every index in
    [0, rows)) and its thread count: 0 when there is nothing to copy."""
    cdef Py_ssize_t n = index.shape[0], i
    if out_rows != n or out_width != width:
        raise ValueError(f"out must have shape ({n}, {width}){unit}, got "
                         f"({out_rows}, {out_width})")
    for i in range(n):
        if index[i] < 0 or index[i] >= rows:
            raise IndexError(f"index {index[i]} is outside [0, {rows})")
    if width == 0:
        return 0
    return threads_for(n * width, GATHER_PARALLEL_BYTES, nthreads)


def gather_rows(const unsigned char[:, ::1] src, const int64_t[::1] index,
                unsigned char[:, ::1] out, int nthreads=0):
    """out[i] = src[index[i]], rows as raw bytes (any dtype, viewed as uint8 rows). The rows
    are random places in memory, each a wait on DRAM: the threads split them, so more of those
    waits overlap. Indices outside [0, rows) raise IndexError before anything is copied."""
    cdef Py_ssize_t n = index.shape[0], width = src.shape[1], i
    cdef int threads = _gather_threads(index, src.shape[0], width, out.shape[0], out.shape[1],
                                       " (bytes)", nthreads)
    if threads == 0:
        return
    with nogil:
        for i in prange(n, schedule="static", num_threads=threads):
            memcpy(&out[i, 0], &src[index[i], 0], width)


# ---- uint8 images gathered and scaled in one pass --------------------------------------------
# Trainer.fit keeps uint8 images as they are and converts each shuffled batch as it gathers it:
# converting the whole set up front costs a float copy four times its size (188 MB for MNIST,
# most of it page faults on fresh memory: 6-13% of an MLP epoch), and the batch then reads a
# quarter of the bytes. The division is the one to_float does (u / 255 in the float type,
# correctly rounded), so the values are those of the up-front conversion, bit for bit.

cdef extern from *:
    """
    static void fastnn_scale_u8_f32(const unsigned char *restrict src, float *restrict dst,
                                    Py_ssize_t n)
    {
        Py_ssize_t i;
        for (i = 0; i < n; i++)
            dst[i] = (float)src[i] / 255.0f;
    }
    static void fastnn_scale_u8_f64(const unsigned char *restrict src, double *restrict dst,
                                    Py_ssize_t n)
    {
        Py_ssize_t i;
        for (i = 0; i < n; i++)
            dst[i] = (double)src[i] / 255.0;
    }
    """
    void fastnn_scale_u8_f32(const unsigned char* src, float* dst, Py_ssize_t n) noexcept nogil
    void fastnn_scale_u8_f64(const unsigned char* src, double* dst, Py_ssize_t n) noexcept nogil


def gather_rows_scaled(const unsigned char[:, ::1] src, const int64_t[::1] index,
                       floating[:, ::1] out, int nthreads=0):
    """out[i] = src[index[i]] / 255 in out's float type: uint8 image rows gathered and scaled
    to [0, 1] as fastnn.datasets.to_float scales them. Indices outside [0, rows) raise
    IndexError before anything is written."""
    cdef Py_ssize_t n = index.shape[0], width = src.shape[1], i
    cdef int threads = _gather_threads(index, src.shape[0], width, out.shape[0], out.shape[1],
                                       "", nthreads)
    if threads == 0:
        return
    with nogil:
        for i in prange(n, schedule="static", num_threads=threads):
            if floating is float:
                fastnn_scale_u8_f32(&src[index[i], 0], &out[i, 0], width)
            else:
                fastnn_scale_u8_f64(&src[index[i], 0], &out[i, 0], width)
