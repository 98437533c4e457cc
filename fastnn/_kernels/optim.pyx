"""In-place optimizer updates, one pass over each array, PyTorch's formulas.

The arithmetic is done in the parameter's own type, in the reference's order, so float32 results
match the NumPy reference to rounding. Large arrays are cut into fixed chunks run in parallel
(elementwise, so the result does not depend on the thread count).
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt, sqrtf

from fastnn._kernels.runtime cimport num_threads

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


cdef inline int _threads_for(Py_ssize_t n) noexcept nogil:
    return num_threads() if n >= PARALLEL_MIN_SIZE else 1


def _same_size(name, Py_ssize_t size, Py_ssize_t expected):
    if size != expected:
        raise ValueError(f"{name} must have {expected} elements, got {size}")


def sgd_step(floating[::1] param, const floating[::1] grad, floating[::1] velocity,
             double lr, double momentum, double weight_decay, bint nesterov):
    """param -= lr * update (see NumpyBackend.sgd_step); velocity may be None when momentum
    is 0. All arrays are flat views of same-size C-contiguous arrays."""
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
                            num_threads=_threads_for(n)):
            start = chunk * CHUNK
            _sgd(p + start, g + start, NULL if v == NULL else v + start, min(CHUNK, n - start),
                 <floating>lr, <floating>momentum, <floating>weight_decay, nesterov)


def adam_step(floating[::1] param, const floating[::1] grad, floating[::1] m, floating[::1] v,
              double lr, double beta1, double beta2, double correction1, double correction2,
              double eps, double weight_decay):
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
                            num_threads=_threads_for(n)):
            start = chunk * CHUNK
            _adam(p + start, g + start, m_ + start, v_ + start, min(CHUNK, n - start),
                  <floating>lr, <floating>beta1, <floating>(1.0 - beta1), <floating>beta2,
                  <floating>(1.0 - beta2), <floating>correction1, <floating>correction2,
                  <floating>eps, <floating>weight_decay)
