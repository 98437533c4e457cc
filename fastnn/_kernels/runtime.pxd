# Shared by every kernel module: how many threads a parallel loop may use.
cdef int num_threads() noexcept nogil
# The thread count a kernel called with `nthreads` runs: nthreads itself when > 0, else the
# count fastnn.set_num_threads chose; never more than MAX_KERNEL_THREADS.
cdef int resolve_threads(int nthreads) noexcept nogil
# resolve_threads(nthreads) for a loop over `work` elements, or 1 below `min_work` (where
# waking the other threads costs more than they save).
cdef int threads_for(Py_ssize_t work, Py_ssize_t min_work, int nthreads) noexcept nogil
