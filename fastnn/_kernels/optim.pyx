"""In-place optimizer updates, one pass over each array, PyTorch's formulas.

The arithmetic is done in the parameter's own type, in the reference's order, so float32 results
match the NumPy reference to rounding. Large arrays are cut into fixed chunks run in parallel
(elementwise, so the result does not depend on the thread count).
"""
from cython cimport floating
cimport numpy as cnp
import numpy as np
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf
from libc.stdint cimport int64_t

from fastnn._kernels.runtime cimport threads_for

cnp.import_array()

cdef Py_ssize_t CHUNK = 8192
# Below this many elements one thread is faster than waking the others.
cdef Py_ssize_t PARALLEL_MIN_SIZE = 65536


cdef inline void _sgd(floating* p, const floating* g, floating* v, Py_ssize_t n, floating lr,
                      floating momentum, floating weight_decay, bint nesterov) noexcept nogil:
    """v is NULL without momentum. Branches are loop-invariant (unswitched by the compiler)."""
    cdef Py_ssize_t i
    cdef floating gi
    for i in range(n):
        gi = g[i]
        if weight_decay != 0:
            gi = gi + weight_decay * p[i]
        if v != NULL:
            v[i] = momentum * v[i] + gi
            if nesterov:
                gi = gi + momentum * v[i]
            else:
                gi = v[i]
        p[i] = p[i] - lr * gi


cdef inline void _adam(floating* p, const floating* g, floating* m, floating* v, Py_ssize_t n,
                       floating lr, floating beta1, floating one_minus_beta1, floating beta2,
                       floating one_minus_beta2, floating correction1, floating correction2,
                       floating eps, floating weight_decay) noexcept nogil:
    cdef Py_ssize_t i
    cdef floating gi, m_hat, v_hat, root
    for i in range(n):
        gi = g[i]
        if weight_decay != 0:
            gi = gi + weight_decay * p[i]
        m[i] = beta1 * m[i] + one_minus_beta1 * gi
        v[i] = beta2 * v[i] + one_minus_beta2 * gi * gi
        m_hat = m[i] / correction1
        v_hat = v[i] / correction2
        if floating is float:
            root = sqrtf(v_hat)
        else:
            root = sqrt(v_hat)
        p[i] = p[i] - lr * m_hat / (root + eps)


def _same_size(name, Py_ssize_t size, Py_ssize_t expected):
    if size != expected:
        raise ValueError(f"{name} must have {expected} elements, got {size}")


def sgd_step(floating[::1] param, const floating[::1] grad, floating[::1] velocity,
             double lr, double momentum, double weight_decay, bint nesterov, int nthreads=0):
    """param -= lr * update (see NumpyBackend.sgd_step); velocity may be None when momentum
    is 0. All arrays are flat views of same-size C-contiguous arrays. On `nthreads` threads
    (0: fastnn's count)."""
    cdef Py_ssize_t n = param.shape[0], chunk, start
    cdef floating* v = NULL
    _same_size("grad", grad.shape[0], n)
    if velocity is not None:
        _same_size("velocity", velocity.shape[0], n)
        if n:
            v = &velocity[0]
    elif momentum != 0:
        raise ValueError("velocity is required when momentum > 0")
    if n == 0:
        return
    cdef floating* p = &param[0]
    cdef const floating* g = &grad[0]
    with nogil:
        for chunk in prange((n + CHUNK - 1) // CHUNK, schedule="static",
                            num_threads=threads_for(n, PARALLEL_MIN_SIZE, nthreads)):
            start = chunk * CHUNK
            _sgd(p + start, g + start, NULL if v == NULL else v + start, min(CHUNK, n - start),
                 <floating>lr, <floating>momentum, <floating>weight_decay, nesterov)


def adam_step(floating[::1] param, const floating[::1] grad, floating[::1] m, floating[::1] v,
              double lr, double beta1, double beta2, double correction1, double correction2,
              double eps, double weight_decay, int nthreads=0):
    """PyTorch's Adam with L2 weight decay (see NumpyBackend.adam_step). correction1 and 2 are
    the bias corrections 1 - beta1**step and 1 - beta2**step (computed by the caller, where a
    huge step cannot overflow)."""
    cdef Py_ssize_t n = param.shape[0], chunk, start
    _same_size("grad", grad.shape[0], n)
    _same_size("m", m.shape[0], n)
    _same_size("v", v.shape[0], n)
    if not (correction1 > 0 and correction2 > 0):
        raise ValueError("the bias corrections must be > 0")
    if n == 0:
        return
    cdef floating* p = &param[0]
    cdef const floating* g = &grad[0]
    cdef floating* m_ = &m[0]
    cdef floating* v_ = &v[0]
    with nogil:
        for chunk in prange((n + CHUNK - 1) // CHUNK, schedule="static",
                            num_threads=threads_for(n, PARALLEL_MIN_SIZE, nthreads)):
            start = chunk * CHUNK
            _adam(p + start, g + start, m_ + start, v_ + start, min(CHUNK, n - start),
                  <floating>lr, <floating>beta1, <floating>(1.0 - beta1), <floating>beta2,
                  <floating>(1.0 - beta2), <floating>correction1, <floating>correction2,
                  <floating>eps, <floating>weight_decay)


# ---- many arrays in one call ---------------------------------------------------------------
# A model's parameters are a handful of arrays of very different sizes (a 400k weight beside a
# 10-element bias). One call updates them all: one parallel loop over the chunks of every
# array, so small ones cost no call of their own and large ones are still split evenly.
# `table` rows are (param address, grad address, state addresses..., element count), written by
# the caller (fastnn.backends.cpu) from arrays of one dtype it has checked and keeps alive. The
# first row's parameter is passed as well, as a typed memoryview: its type picks the kernel
# (float32 or float64), as every other kernel's arrays do.

cdef inline Py_ssize_t _array_of_chunk(const int64_t* first_chunk, Py_ssize_t arrays,
                                       Py_ssize_t chunk) noexcept nogil:
    cdef Py_ssize_t t = 0
    while t + 1 < arrays and first_chunk[t + 1] <= chunk:
        t += 1
    return t


def address_table(groups):
    """int64 rows (address of each array, 0 for None, ..., size of the first) for `groups`, a
    sequence of equal-length tuples of ndarrays or None: sgd_step_many's and adam_step_many's
    table, without a Python attribute lookup per array."""
    groups = list(groups)
    width = len(groups[0]) if groups else 0
    table = np.empty((len(groups), width + 1), np.int64)
    cdef int64_t[:, ::1] t = table
    cdef Py_ssize_t r, c
    for r in range(len(groups)):
        group = groups[r]
        for c in range(width):
            a = group[c]
            t[r, c] = 0 if a is None else <int64_t><size_t>cnp.PyArray_DATA(a)
        t[r, width] = cnp.PyArray_SIZE(group[0])
    return table


cdef tuple _chunk_plan(const int64_t[:, ::1] table, str columns, const void* first_param,
                       int nthreads):
    """For a table whose columns are named by `columns` (the last one the element count) and
    whose first row's parameter is at `first_param` (NULL: empty): the first global chunk of
    each array, the total number of chunks, and the threads."""
    cdef Py_ssize_t t, total = 0, count_column = len(columns.split(",")) - 1
    if table.shape[1] != count_column + 1:
        raise ValueError(f"table must have {count_column + 1} columns: {columns}")
    if <size_t>table[0, 0] != <size_t>first_param and table[0, count_column] != 0:
        raise ValueError("first_param must be the table's first parameter")
    starts = np.empty(table.shape[0], np.int64)
    cdef int64_t[::1] s = starts
    for t in range(table.shape[0]):
        s[t] = total
        total += (table[t, count_column] + CHUNK - 1) // CHUNK
    return starts, total, threads_for(total * CHUNK, PARALLEL_MIN_SIZE, nthreads)


cdef void _sgd_many(const int64_t[:, ::1] table, const int64_t[::1] starts,
                    Py_ssize_t total, int threads, floating lr, floating momentum,
                    floating weight_decay, bint nesterov) noexcept nogil:
    cdef Py_ssize_t c, t, start, n
    for c in prange(total, schedule="static", num_threads=threads):
        t = _array_of_chunk(&starts[0], table.shape[0], c)
        start = (c - starts[t]) * CHUNK
        n = min(CHUNK, table[t, 3] - start)
        _sgd((<floating*><size_t>table[t, 0]) + start,
             (<const floating*><size_t>table[t, 1]) + start,
             NULL if table[t, 2] == 0 else (<floating*><size_t>table[t, 2]) + start,
             n, lr, momentum, weight_decay, nesterov)


def sgd_step_many(const int64_t[:, ::1] table, floating[::1] first_param, double lr,
                  double momentum, double weight_decay, bint nesterov, int nthreads=0):
    """sgd_step for every row (param, grad, velocity or 0, size) of table, in one parallel
    loop; the same arithmetic as sgd_step, element by element. first_param: the first row's
    parameter (flat), whose type is every array's."""
    if table.shape[0] == 0:
        return
    starts, total, nt = _chunk_plan(table, "param, grad, velocity, size",
                                    &first_param[0] if first_param.shape[0] else NULL,
                                    nthreads)
    if momentum != 0:
        for t in range(table.shape[0]):
            if table[t, 2] == 0:
                raise ValueError("velocity is required when momentum > 0")
    cdef const int64_t[::1] s = starts
    cdef Py_ssize_t chunks = total
    cdef int threads = nt
    with nogil:
        _sgd_many(table, s, chunks, threads, <floating>lr, <floating>momentum,
                  <floating>weight_decay, nesterov)


cdef void _adam_many(const int64_t[:, ::1] table, const int64_t[::1] starts,
                     Py_ssize_t total, int threads, floating lr, floating beta1,
                     floating one_minus_beta1, floating beta2, floating one_minus_beta2,
                     floating correction1, floating correction2, floating eps,
                     floating weight_decay) noexcept nogil:
    cdef Py_ssize_t c, t, start, n
    for c in prange(total, schedule="static", num_threads=threads):
        t = _array_of_chunk(&starts[0], table.shape[0], c)
        start = (c - starts[t]) * CHUNK
        n = min(CHUNK, table[t, 4] - start)
        _adam((<floating*><size_t>table[t, 0]) + start,
              (<const floating*><size_t>table[t, 1]) + start,
              (<floating*><size_t>table[t, 2]) + start,
              (<floating*><size_t>table[t, 3]) + start,
              n, lr, beta1, one_minus_beta1, beta2, one_minus_beta2,
              correction1, correction2, eps, weight_decay)


def adam_step_many(const int64_t[:, ::1] table, floating[::1] first_param, double lr,
                   double beta1, double beta2, double correction1, double correction2,
                   double eps, double weight_decay, int nthreads=0):
    """adam_step for every row (param, grad, m, v, size) of table, in one parallel loop;
    first_param as in sgd_step_many."""
    if table.shape[0] == 0:
        return
    starts, total, nt = _chunk_plan(table, "param, grad, m, v, size",
                                    &first_param[0] if first_param.shape[0] else NULL,
                                    nthreads)
    if not (correction1 > 0 and correction2 > 0):
        raise ValueError("the bias corrections must be > 0")
    cdef const int64_t[::1] s = starts
    cdef Py_ssize_t chunks = total
    cdef int threads = nt
    with nogil:
        _adam_many(table, s, chunks, threads, <floating>lr, <floating>beta1,
                   <floating>(1.0 - beta1), <floating>beta2, <floating>(1.0 - beta2),
                   <floating>correction1, <floating>correction2, <floating>eps,
                   <floating>weight_decay)
