# Shared by every kernel module: how many threads a parallel loop may use.
cdef int num_threads() noexcept nogil
