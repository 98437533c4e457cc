"""conv2d forward and backward (NCHW, weight (Co, Ci, kH, kW), stride, zero padding, fused
bias + ReLU), for arrays already checked by the backend (fastnn.backends.cpu).

Three algorithms:
  "gemm"      any shape, float32 and float64: per sample, im2col into a per-thread buffer and
              one GEMM with the bias and ReLU fused into its store; backward: dW and db summed
              over a fixed partition of the batch (so results do not depend on the thread
              count), dX by GEMM + col2im.
  "winograd"  5x5 kernels, stride 1, float32 (src/conv_winograd.c): about 6x fewer multiplies;
              its rounding error is a few 1e-7 of the products' size (|w| * |x|), so a few
              1e-6 of the output's norm on layers with more than a handful of outputs.
  "direct"    one input channel, stride 1, float32 (src/conv_direct.c): the first layer of an
              image model, along output rows without im2col (AVX-512 kernels for 5-wide
              kernels and rows of up to 32 outputs). Its backward computes dW and db only, so a
              backward call that wants dX runs "gemm" instead.
"auto" picks direct or winograd where they apply (winograd with several input channels and
enough outputs), else gemm.

Scratch memory is kept per Python thread and reused, so a training loop does not allocate;
`workspace=` passes a buffer instead (a 1-D array of the arrays' dtype, at least
`workspace_size(...)` elements).
"""
import threading

import numpy as np

cimport cython
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.stdint cimport int64_t, uint32_t
from libc.string cimport memset

from fastnn._kernels.gemm cimport gemm
from fastnn._kernels.runtime cimport resolve_threads


cdef extern from "conv_simd.h" nogil:
    int fastnn_conv_simd_available()
    const char *fastnn_conv_isa()
    const char *fastnn_conv_set_isa(const char *name)

cdef extern from "conv_direct.h" nogil:
    ctypedef struct fastnn_direct_shape:
        int n, h, w, co, kh, kw, pad
    size_t fastnn_direct_forward_floats(const fastnn_direct_shape *s, int pool, int nthreads)
    void fastnn_direct_forward(const fastnn_direct_shape *s, const float *x, const float *w,
                               const float *bias, int relu, float *y, int pool, int *argmax,
                               float *work, int nthreads)
    size_t fastnn_direct_backward_floats(const fastnn_direct_shape *s, int nthreads)
    void fastnn_direct_backward(const fastnn_direct_shape *s, const float *x, const float *y,
                                const float *dy, int relu, int pool, const int *argmax,
                                float *dw, float *db, float *work, int nthreads)

cdef extern from "conv_winograd.h" nogil:
    ctypedef struct fastnn_wino_shape:
        int n, ci, h, w, co, pad
    size_t fastnn_wino_forward_floats(const fastnn_wino_shape *s, int pool, int nthreads)
    void fastnn_wino_forward(const fastnn_wino_shape *s, const float *x, const float *w,
                             const float *bias, int relu, float *y, int pool, int *argmax,
                             float *work, int nthreads)
    size_t fastnn_wino_backward_floats(const fastnn_wino_shape *s, int pool, int nthreads)
    size_t fastnn_wino_kept_floats(const fastnn_wino_shape *s)
    void fastnn_wino_forward_kept(const fastnn_wino_shape *s, const float *x, const float *w,
                                  const float *bias, int relu, float *y, int pool, int *argmax,
                                  float *work, int nthreads, float *kept, float *w_kept,
                                  int64_t *state)
    void fastnn_wino_backward(const fastnn_wino_shape *s, const float *x, const float *w,
                              const float *y, const float *dy, int relu, int pool,
                              const int *argmax, float *dx, float *dw, float *db, float *work,
                              int nthreads)

# ---- policy: which algorithm runs, what it needs, the plan cache, scratch memory --------------
# Everything the kernels decide about a call lives here; the backend asks fusable() and
# workspace_size(), the entry points below ask _plan() and _scratch().

ALGORITHMS = ("auto", "gemm", "winograd", "direct")

# The algorithm a plan runs, as the typed kernels below take it.
cdef enum Algorithm:
    GEMM = 0
    WINOGRAD = 1
    DIRECT = 2

_ALGORITHM_CODES = {"gemm": GEMM, "winograd": WINOGRAD, "direct": DIRECT}

# The batch is cut into at most this many parts for dW and db: each part is summed by one
# thread, then the parts are added in order, whatever the thread count.
cdef enum:
    GEMM_PARTS = 4

# Winograd needs a few input channels to beat GEMM: its transforms cost per channel, and
# channels are padded to multiples of 8. Its rounding error scales with the products, not with
# their sum, so it is used only where there are enough outputs per channel for the result's
# norm to be of the products' size (a handful of outputs can cancel to almost nothing).
WINOGRAD_MIN_CHANNELS = 4
WINOGRAD_MIN_OUTPUTS = 64


def isa():
    """The instruction set the direct and Winograd kernels run: "avx512" (AVX-512 direct kernels,
    AVX2 Winograd), "avx2", "portable" or "none"."""
    return fastnn_conv_isa().decode()


def _set_isa(name=None):
    """Testing hook: run the direct and Winograd kernels' "avx512", "avx2" or "portable" build
    (clamped to what this CPU has); None restores the default. Returns the build now in use."""
    if name is not None and name not in ("avx512", "avx2", "portable"):
        raise ValueError(f"isa must be 'avx512', 'avx2', 'portable' or None, got {name!r}")
    cdef bytes encoded = b"" if name is None else name.encode()
    return fastnn_conv_set_isa(encoded).decode()


def choose(x_shape, w_shape, dtype, stride, padding, algorithm="auto"):
    """The algorithm a call with these arguments runs: "gemm", "winograd" or "direct"
    (a backward call that wants dX runs "gemm" where this says "direct")."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    simd = np.dtype(dtype) == np.float32 and stride == 1 and fastnn_conv_simd_available() != 0
    winograd = simd and tuple(w_shape[2:]) == (5, 5)
    direct = simd and x_shape[1] == 1
    if algorithm == "winograd":
        if not winograd:
            raise ValueError("the winograd algorithm needs float32, a 5x5 kernel and stride 1")
        return "winograd"
    if algorithm == "direct":
        if not direct:
            raise ValueError("the direct algorithm needs float32, one input channel and "
                             "stride 1")
        return "direct"
    if algorithm == "auto":
        if direct:
            return "direct"
        if winograd and x_shape[1] >= WINOGRAD_MIN_CHANNELS:
            n, _, h, wd = x_shape
            outputs = n * _out_size(h, 5, 1, padding) * _out_size(wd, 5, 1, padding)
            if outputs >= WINOGRAD_MIN_OUTPUTS:
                return "winograd"
    return "gemm"


def _out_size(int size, int k, int stride, int padding):
    return (size + 2 * padding - k) // stride + 1


def workspace_size(kind, x_shape, w_shape, dtype, stride=1, padding=0, algorithm="auto",
                   nthreads=0, need_dx=True, pool=0):
    """Elements of `dtype` a call of `kind` ("forward" or "backward"; with pool > 0, of
    forward_maxpool or backward_maxpool) needs as workspace."""
    n, ci, h, wd = x_shape
    co, _, kh, kw = w_shape
    nt = resolve_threads(nthreads)
    cdef fastnn_wino_shape s
    cdef fastnn_direct_shape d
    algo = choose(x_shape, w_shape, dtype, stride, padding, algorithm)
    if algo == "direct" and kind != "forward" and need_dx:
        algo = "gemm"
    if algo == "winograd":
        s.n, s.ci, s.h, s.w, s.co, s.pad = n, ci, h, wd, co, padding
        if kind == "forward":
            return fastnn_wino_forward_floats(&s, pool, nt)
        return fastnn_wino_backward_floats(&s, pool, nt)
    if algo == "direct":
        d.n, d.h, d.w, d.co, d.kh, d.kw, d.pad = n, h, wd, co, kh, kw, padding
        if kind == "forward":
            return fastnn_direct_forward_floats(&d, pool, nt)
        return fastnn_direct_backward_floats(&d, nt)
    ho, wo = _out_size(h, kh, stride, padding), _out_size(wd, kw, stride, padding)
    k, p = ci * kh * kw, ho * wo
    if kind == "forward":
        return 0 if _is_pointwise(kh, kw, stride, padding) else nt * k * p
    parts = min(n, GEMM_PARTS)
    per_thread = (k * p if not _is_pointwise(kh, kw, stride, padding) else 0) + co * p
    if need_dx:
        per_thread += k * p
    return parts * (co * k + co) + nt * per_thread


cdef bint _is_pointwise(int kh, int kw, int stride, int padding) noexcept nogil:
    """1x1 kernel, stride 1, no padding: the input plane is its own im2col matrix."""
    return kh == 1 and kw == 1 and stride == 1 and padding == 0


_local = threading.local()


def _scratch(size, dtype, workspace):
    """A 1-D buffer of at least `size` elements: `workspace` (checked) or this thread's own."""
    dtype = np.dtype(dtype)
    size = max(int(size), 1)
    if workspace is not None:
        if not isinstance(workspace, np.ndarray):
            raise TypeError(f"workspace must be a numpy.ndarray, got {type(workspace).__name__}")
        if workspace.dtype != dtype:
            raise TypeError(f"workspace must be {dtype.name}, got {workspace.dtype.name}")
        if workspace.ndim != 1 or not workspace.flags.c_contiguous \
                or not workspace.flags.writeable:
            raise ValueError("workspace must be a writeable, C-contiguous 1-D array")
        if workspace.shape[0] < size:
            raise ValueError(f"workspace must have at least {size} elements, "
                             f"got {workspace.shape[0]}")
        return workspace
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    buf = buffers.get(dtype)
    if buf is None or buf.shape[0] < size:
        # grow with headroom, so layers of slightly different sizes share one buffer
        buf = buffers[dtype] = np.empty(size + size // 4, dtype)
    return buf


def release_workspaces():
    """Free this thread's cached scratch memory."""
    _local.buffers = {}


def fusable(x_shape, w_shape, dtype, stride, padding, pool, algorithm="auto", need_dx=True):
    """Whether forward_maxpool / backward_maxpool take these arguments: the direct or Winograd
    algorithm (backward: direct only without dx), a k x k pool with stride k that fits."""
    if pool < 1:
        return False
    try:
        algo = choose(x_shape, w_shape, dtype, stride, padding, algorithm)
    except ValueError:
        return False
    if algo == "gemm" or (algo == "direct" and need_dx):
        return False
    _, _, h, wd = x_shape
    kh, kw = w_shape[2], w_shape[3]
    return (_out_size(h, kh, stride, padding) >= pool
            and _out_size(wd, kw, stride, padding) >= pool)


def _check_problem(x, w, stride, padding):
    """The backend checks the arguments; this only refuses what would make the kernels read or
    write out of bounds, so that a wrong call from elsewhere raises instead of crashing."""
    if x.dtype not in (np.float32, np.float64):
        raise TypeError(f"x must be float32 or float64, got {x.dtype}")
    if x.ndim != 4 or w.ndim != 4 or x.shape[1] != w.shape[1] or min(x.shape) < 1 \
            or min(w.shape) < 1:
        raise ValueError(f"x {x.shape} and w {w.shape} do not make a convolution")
    if stride < 1 or padding < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0, got {stride}, {padding}")
    n, _, h, wd = x.shape
    co, ci, kh, kw = w.shape
    ho, wo = _out_size(h, kh, stride, padding), _out_size(wd, kw, stride, padding)
    if ho < 1 or wo < 1:
        raise ValueError(f"kernel {kh}x{kw} does not fit the input {h}x{wd} with padding "
                         f"{padding}")
    if max(n * co * ho * wo, x.size, ci * kh * kw * ho * wo) >= 2**31:
        raise ValueError("arrays this large are not supported (sizes must be < 2**31)")
    return (n, co, ho, wo)


# (direction, shapes, dtype, stride, padding, algorithm, threads, dx wanted) ->
# (algorithm run, workspace size, output shape): worked out and checked once per layer shape.
_plans = {}


def _plan(bint backward, x, w, int stride, int padding, algorithm, int nt, bint need_dx,
          int pool=0):
    for name, a in (("x", x), ("w", w)):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name} must be a numpy.ndarray, got {type(a).__name__}")
    key = (backward, x.shape, w.shape, x.dtype, stride, padding, algorithm, nt, need_dx, pool)
    plan = _plans.get(key)
    if plan is None:
        y_shape = _check_problem(x, w, stride, padding)
        algo = choose(x.shape, w.shape, x.dtype, stride, padding, algorithm)
        if backward and algo == "direct" and need_dx:
            if algorithm == "direct":
                raise ValueError("the direct algorithm computes no dx: pass dx=None")
            algo = "gemm"
        if pool:
            if pool < 1 or y_shape[2] < pool or y_shape[3] < pool:
                raise ValueError(f"pool must be >= 1 and fit the convolution's output "
                                 f"{y_shape[2]}x{y_shape[3]}, got {pool}")
            if algo == "gemm":
                raise ValueError("a fused max-pool needs the direct or winograd algorithm "
                                 "(see fusable())")
            y_shape = (y_shape[0], y_shape[1], y_shape[2] // pool, y_shape[3] // pool)
        size = workspace_size("backward" if backward else "forward", x.shape, w.shape,
                              x.dtype, stride, padding, algo, nt, need_dx, pool)
        if len(_plans) >= 256:
            _plans.clear()
        plan = _plans[key] = (algo, size, y_shape)
    return plan


# ---- im2col / col2im -----------------------------------------------------------------------

@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _im2col(const floating *x, int ci, int h, int wd, int kh, int kw, int stride,
                  int padding, int ho, int wo, floating *col) noexcept nogil:
    """col[(c, i, j), (oh, ow)] = xpad[c, oh*stride + i, ow*stride + j]."""
    cdef int c, i, j, oh, ow, ih, iw, lo, hi
    cdef const floating *plane
    cdef const floating *src
    cdef floating *dst
    cdef Py_ssize_t q
    cdef floating *row
    lo = hi = 0
    for c in range(ci):
        plane = x + <Py_ssize_t>c * h * wd
        for i in range(kh):
            for j in range(kw):
                row = col + (<Py_ssize_t>(c * kh + i) * kw + j) * ho * wo
                if stride == 1:
                    # outputs [lo, hi) of a row read inside the input row: a straight copy
                    # (no per-element bounds test), zeros either side
                    lo = padding - j if padding > j else 0
                    hi = wd + padding - j if wd + padding - j < wo else wo
                    if hi < lo:
                        hi = lo
                for oh in range(ho):
                    ih = oh * stride + i - padding
                    if ih < 0 or ih >= h:
                        memset(row + oh * wo, 0, sizeof(floating) * wo)
                        continue
                    if stride == 1:
                        src = plane + ih * wd + j - padding
                        dst = row + oh * wo
                        for q in range(lo):
                            dst[q] = 0
                        for q in range(lo, hi):
                            dst[q] = src[q]
                        for q in range(hi, wo):
                            dst[q] = 0
                    else:
                        for ow in range(wo):
                            iw = ow * stride + j - padding
                            row[oh * wo + ow] = plane[ih * wd + iw] if 0 <= iw < wd else 0


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _col2im(const floating *col, int ci, int h, int wd, int kh, int kw, int stride,
                  int padding, int ho, int wo, floating *x) noexcept nogil:
    """x = 0, then x[c, oh*stride + i - pad, ow*stride + j - pad] += col[(c, i, j), (oh, ow)]."""
    cdef int c, i, j, oh, ow, ih, iw
    cdef floating *plane
    cdef const floating *row
    memset(x, 0, sizeof(floating) * <size_t>ci * h * wd)
    for c in range(ci):
        plane = x + <Py_ssize_t>c * h * wd
        for i in range(kh):
            for j in range(kw):
                row = col + (<Py_ssize_t>(c * kh + i) * kw + j) * ho * wo
                for oh in range(ho):
                    ih = oh * stride + i - padding
                    if ih < 0 or ih >= h:
                        continue
                    for ow in range(wo):
                        iw = ow * stride + j - padding
                        if 0 <= iw < wd:
                            plane[ih * wd + iw] += row[oh * wo + ow]


# ---- GEMM algorithm ------------------------------------------------------------------------

@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _gemm_forward(const floating *x, const floating *w, const floating *b, floating *y,
                        int n, int ci, int h, int wd, int co, int kh, int kw, int stride,
                        int padding, int ho, int wo, bint relu, floating *work,
                        int nt) noexcept nogil:
    cdef int s, tid
    cdef int k = ci * kh * kw, p = ho * wo
    cdef bint pointwise = _is_pointwise(kh, kw, stride, padding)
    cdef floating *col
    cdef const floating *cols
    if n < nt:
        # fewer samples than threads (batch-1 inference): the samples in turn, each GEMM on
        # every thread; the GEMM's result does not depend on its thread count
        for s in range(n):
            if pointwise:
                cols = x + <Py_ssize_t>s * ci * h * wd
            else:
                _im2col(x + <Py_ssize_t>s * ci * h * wd, ci, h, wd, kh, kw, stride, padding,
                        ho, wo, work)
                cols = work
            gemm(False, False, co, p, k, w, k, cols, p, 0, y + <Py_ssize_t>s * co * p, p, b,
                 2 if b != NULL else 0, relu, nt)
        return
    for s in prange(n, nogil=True, schedule="static", num_threads=nt):
        tid = threadid()
        if pointwise:
            cols = x + <Py_ssize_t>s * ci * h * wd
        else:
            col = work + <Py_ssize_t>tid * k * p
            _im2col(x + <Py_ssize_t>s * ci * h * wd, ci, h, wd, kh, kw, stride, padding,
                    ho, wo, col)
            cols = col
        # y[s] (co x p) = w (co x k) @ cols (k x p) + b[:, None], ReLU, one store
        gemm(False, False, co, p, k, w, k, cols, p, 0, y + <Py_ssize_t>s * co * p, p, b,
             2 if b != NULL else 0, relu, 1)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _gemm_backward(const floating *x, const floating *w, const floating *y,
                         const floating *dy, floating *dx, floating *dw, floating *db,
                         int n, int ci, int h, int wd, int co, int kh, int kw, int stride,
                         int padding, int ho, int wo, bint relu, floating *work,
                         int nt) noexcept nogil:
    cdef int k = ci * kh * kw, p = ho * wo
    cdef int parts = n if n < GEMM_PARTS else GEMM_PARTS
    cdef bint pointwise = _is_pointwise(kh, kw, stride, padding)
    cdef Py_ssize_t per_thread = (0 if pointwise else <Py_ssize_t>k * p) + <Py_ssize_t>co * p \
        + (<Py_ssize_t>k * p if dx != NULL else 0)
    cdef floating *dw_parts = work                          # [part][co][k]
    cdef floating *db_parts = work + <Py_ssize_t>parts * co * k   # [part][co]
    cdef floating *thread_base = db_parts + <Py_ssize_t>parts * co
    cdef int part, s, tid, o, q, begin, end
    cdef Py_ssize_t i, size
    cdef floating *col
    cdef floating *dym
    cdef floating *dcol
    cdef const floating *cols
    cdef const floating *src
    cdef const floating *ys
    cdef floating acc
    for part in prange(parts, nogil=True, schedule="static", chunksize=1, num_threads=nt):
        tid = threadid()
        col = thread_base + tid * per_thread
        dym = col + (0 if pointwise else <Py_ssize_t>k * p)
        dcol = dym + <Py_ssize_t>co * p
        begin = <int>((<long long>n * part) // parts)
        end = <int>((<long long>n * (part + 1)) // parts)
        for o in range(co):
            db_parts[part * co + o] = 0
        for s in range(begin, end):
            # the ReLU mask, once; db from the masked gradient
            src = dy + <Py_ssize_t>s * co * p
            ys = y + <Py_ssize_t>s * co * p
            for o in range(co):
                acc = 0
                for q in range(p):
                    i = <Py_ssize_t>o * p + q
                    if relu and not (ys[i] > 0):
                        dym[i] = 0
                    else:
                        dym[i] = src[i]
                    acc = acc + dym[i]
                db_parts[part * co + o] += acc
            if pointwise:
                cols = x + <Py_ssize_t>s * ci * h * wd
            else:
                _im2col(x + <Py_ssize_t>s * ci * h * wd, ci, h, wd, kh, kw, stride, padding,
                        ho, wo, col)
                cols = col
            # dW_part (co x k) (+)= dym (co x p) @ cols^T (p x k)
            gemm(False, True, co, k, p, dym, p, cols, p, 0 if s == begin else 1,
                 dw_parts + <Py_ssize_t>part * co * k, k, NULL, 0, False, 1)
            if dx != NULL:
                # dcol (k x p) = w^T (k x co) @ dym (co x p), scattered back onto dx[s]
                if pointwise:
                    gemm(True, False, k, p, co, w, k, dym, p, 0,
                         dx + <Py_ssize_t>s * ci * h * wd, p, NULL, 0, False, 1)
                else:
                    gemm(True, False, k, p, co, w, k, dym, p, 0, dcol, p, NULL, 0, False, 1)
                    _col2im(dcol, ci, h, wd, kh, kw, stride, padding, ho, wo,
                            dx + <Py_ssize_t>s * ci * h * wd)
    # the parts, added in order
    size = <Py_ssize_t>co * k
    for i in range(size):
        acc = dw_parts[i]
        for part in range(1, parts):
            acc = acc + dw_parts[part * size + i]
        dw[i] = acc
    for o in range(co):
        acc = db_parts[o]
        for part in range(1, parts):
            acc = acc + db_parts[part * co + o]
        db[o] = acc


# ---- entry points: checked, then the typed kernels below ---------------------------------

def _expect(name, a, shape, dtype):
    if not isinstance(a, np.ndarray) or a.dtype != dtype or not a.flags.c_contiguous:
        raise TypeError(f"{name} must be a C-contiguous {dtype} numpy.ndarray")
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")


def forward(x, w, b, y, int stride, int padding, bint relu, *, algorithm="auto",
            int nthreads=0, workspace=None):
    """y = conv2d(x, w) + b, ReLU'd when relu. x (N,Ci,H,W), w (Co,Ci,kH,kW), b (Co,) or None,
    y (N,Co,Ho,Wo): C-contiguous, one dtype, checked by the caller; y must not overlap them.
    On `nthreads` threads (0: fastnn's count)."""
    cdef int nt = resolve_threads(nthreads)
    algo, size, y_shape = _plan(False, x, w, stride, padding, algorithm, nt, False)
    dtype = x.dtype
    _expect("x", x, x.shape, dtype)
    _expect("w", w, w.shape, dtype)
    if b is not None:
        _expect("b", b, (y_shape[1],), dtype)
    _expect("y", y, y_shape, dtype)
    _forward_kernel(x, w, b, y, None, _scratch(size, dtype, workspace), _ALGORITHM_CODES[algo],
                    stride, padding, relu, 0, nt)
    return y


def backward(x, w, y, dy, dx, dw, db, int stride, int padding, bint relu, *,
             algorithm="auto", int nthreads=0, workspace=None):
    """dx (or None: not computed), dw and db of conv2d, written in place. y is the forward
    output (its > 0 mask gates dy when relu). On `nthreads` threads (0: fastnn's count)."""
    cdef int nt = resolve_threads(nthreads)
    algo, size, y_shape = _plan(True, x, w, stride, padding, algorithm, nt, dx is not None)
    dtype = x.dtype
    _expect("x", x, x.shape, dtype)
    _expect("w", w, w.shape, dtype)
    _expect("y", y, y_shape, dtype)
    _expect("dy", dy, y_shape, dtype)
    if dx is not None:
        _expect("dx", dx, x.shape, dtype)
    _expect("dw", dw, w.shape, dtype)
    _expect("db", db, (w.shape[0],), dtype)
    _backward_kernel(x, w, y, None, dy, dx, dw, db, _scratch(size, dtype, workspace),
                     _ALGORITHM_CODES[algo], stride, padding, relu, 0, nt)


def forward_maxpool(x, w, b, y, argmax, int stride, int padding, bint relu, int pool, *,
                    algorithm="auto", int nthreads=0, workspace=None):
    """y, argmax = maxpool2d(conv2d(x, w) + b (ReLU'd when relu), kernel=pool, stride=pool),
    in one pass: the convolution's output stays in cache. y and argmax (int32, each maximum's
    index in its conv-output plane) have shape (N, Co, Ho // pool, Wo // pool) and are exactly
    what maxpool2d_forward would give for that output. Needs fusable(...)."""
    cdef int nt = resolve_threads(nthreads)
    algo, size, y_shape = _plan(False, x, w, stride, padding, algorithm, nt, False, pool)
    dtype = x.dtype
    _expect("x", x, x.shape, dtype)
    _expect("w", w, w.shape, dtype)
    if b is not None:
        _expect("b", b, (y_shape[1],), dtype)
    _expect("y", y, y_shape, dtype)
    _expect("argmax", argmax, y_shape, np.int32)
    _forward_kernel(x, w, b, y, argmax, _scratch(size, dtype, workspace),
                    _ALGORITHM_CODES[algo], stride, padding, relu, pool, nt)
    return y, argmax


def backward_maxpool(x, w, y, argmax, dy, dx, dw, db, int stride, int padding, bint relu,
                     int pool, *, algorithm="auto", int nthreads=0, workspace=None):
    """dx (or None), dw and db of the fused forward_maxpool, written in place: y and argmax are
    its outputs, dy the gradient at y. The same as maxpool2d_backward then conv2d_backward (the
    ReLU mask is y > 0). Argmax entries outside their window are ignored. Needs fusable(...)."""
    cdef int nt = resolve_threads(nthreads)
    algo, size, y_shape = _plan(True, x, w, stride, padding, algorithm, nt, dx is not None,
                                pool)
    dtype = x.dtype
    _expect("x", x, x.shape, dtype)
    _expect("w", w, w.shape, dtype)
    _expect("y", y, y_shape, dtype)
    _expect("argmax", argmax, y_shape, np.int32)
    _expect("dy", dy, y_shape, dtype)
    if dx is not None:
        _expect("dx", dx, x.shape, dtype)
    _expect("dw", dw, w.shape, dtype)
    _expect("db", db, (w.shape[0],), dtype)
    _backward_kernel(x, w, y, argmax, dy, dx, dw, db, _scratch(size, dtype, workspace),
                     _ALGORITHM_CODES[algo], stride, padding, relu, pool, nt)


# ---- the typed kernels behind the entry points ------------------------------------------------
# One source for float32 and float64 (`floating` memoryviews, as every kernel module); the
# direct and Winograd algorithms exist for float32 only, which the plan guarantees. The entry
# points above checked every shape and dtype; None stands for an absent b, argmax or dx.

cdef void _forward32(int algo, const float *x, const float *w, const float *b, float *y,
                     int pool, int *argmax, float *work, int n, int ci, int h, int wd, int co,
                     int kh, int kw, int stride, int padding, int ho, int wo, bint relu, int nt,
                     float *kept, float *w_kept, int64_t *state) noexcept nogil:
    """One float32 convolution by algorithm code, as forward() and the chain run it: `pool`
    and `argmax` fuse a max-pool (direct and Winograd only); `kept` (or NULL), `w_kept` and
    `state` keep Winograd's transformed weights between calls."""
    cdef fastnn_wino_shape ws
    cdef fastnn_direct_shape ds
    if algo == GEMM:
        _gemm_forward(x, w, b, y, n, ci, h, wd, co, kh, kw, stride, padding, ho, wo, relu,
                      work, nt)
    elif algo == WINOGRAD:
        ws.n, ws.ci, ws.h, ws.w, ws.co, ws.pad = n, ci, h, wd, co, padding
        if kept != NULL:
            fastnn_wino_forward_kept(&ws, x, w, b, relu, y, pool, argmax, work, nt, kept,
                                     w_kept, state)
        else:
            fastnn_wino_forward(&ws, x, w, b, relu, y, pool, argmax, work, nt)
    else:
        ds.n, ds.h, ds.w, ds.co, ds.kh, ds.kw, ds.pad = n, h, wd, co, kh, kw, padding
        fastnn_direct_forward(&ds, x, w, b, relu, y, pool, argmax, work, nt)


def _forward_kernel(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                    const floating[::1] b, floating[:, :, :, ::1] y, int[:, :, :, ::1] argmax,
                    floating[::1] work, int algo, int stride, int padding, bint relu, int pool,
                    int nt):
    cdef int n = x.shape[0], ci = x.shape[1], h = x.shape[2], wd = x.shape[3]
    cdef int co = w.shape[0], kh = w.shape[2], kw = w.shape[3]
    cdef int ho = y.shape[2], wo = y.shape[3]
    cdef const floating *pb = NULL
    cdef int *parg = NULL
    if b is not None:
        pb = &b[0]
    if argmax is not None:
        parg = &argmax[0, 0, 0, 0]
    if floating is float:
        with nogil:
            _forward32(algo, &x[0, 0, 0, 0], &w[0, 0, 0, 0], pb, &y[0, 0, 0, 0], pool, parg,
                       &work[0], n, ci, h, wd, co, kh, kw, stride, padding, ho, wo, relu, nt,
                       NULL, NULL, NULL)
    elif algo == GEMM:
        with nogil:
            _gemm_forward(&x[0, 0, 0, 0], &w[0, 0, 0, 0], pb, &y[0, 0, 0, 0], n, ci, h, wd, co,
                          kh, kw, stride, padding, ho, wo, relu, &work[0], nt)
    else:
        raise ValueError("the direct and winograd algorithms are float32 only")


def _backward_kernel(const floating[:, :, :, ::1] x, const floating[:, :, :, ::1] w,
                     const floating[:, :, :, ::1] y, const int[:, :, :, ::1] argmax,
                     const floating[:, :, :, ::1] dy, floating[:, :, :, ::1] dx,
                     floating[:, :, :, ::1] dw, floating[::1] db, floating[::1] work, int algo,
                     int stride, int padding, bint relu, int pool, int nt):
    cdef int n = x.shape[0], ci = x.shape[1], h = x.shape[2], wd = x.shape[3]
    cdef int co = w.shape[0], kh = w.shape[2], kw = w.shape[3]
    cdef int ho = dy.shape[2], wo = dy.shape[3]
    cdef floating *pdx = NULL
    cdef const int *parg = NULL
    cdef fastnn_wino_shape ws
    cdef fastnn_direct_shape ds
    if dx is not None:
        pdx = &dx[0, 0, 0, 0]
    if argmax is not None:
        parg = &argmax[0, 0, 0, 0]
    if algo == GEMM:
        with nogil:
            _gemm_backward(&x[0, 0, 0, 0], &w[0, 0, 0, 0], &y[0, 0, 0, 0], &dy[0, 0, 0, 0], pdx,
                           &dw[0, 0, 0, 0], &db[0], n, ci, h, wd, co, kh, kw, stride, padding,
                           ho, wo, relu, &work[0], nt)
    elif floating is double:
        raise ValueError("the direct and winograd algorithms are float32 only")
    else:
        if algo == WINOGRAD:
            ws.n, ws.ci, ws.h, ws.w, ws.co, ws.pad = n, ci, h, wd, co, padding
            with nogil:
                fastnn_wino_backward(&ws, &x[0, 0, 0, 0], &w[0, 0, 0, 0], &y[0, 0, 0, 0],
                                     &dy[0, 0, 0, 0], relu, pool, parg, pdx, &dw[0, 0, 0, 0],
                                     &db[0], &work[0], nt)
        else:
            ds.n, ds.h, ds.w, ds.co, ds.kh, ds.kw, ds.pad = n, h, wd, co, kh, kw, padding
            with nogil:
                fastnn_direct_backward(&ds, &x[0, 0, 0, 0], &y[0, 0, 0, 0], &dy[0, 0, 0, 0],
                                       relu, pool, parg, &dw[0, 0, 0, 0], &db[0], &work[0], nt)


# ---- a CNN's convolutions in one call (inference) -----------------------------------------
# Batch-1 inference of a CNN is mostly Python: argument checks and layer dispatch around
# kernels of a few microseconds. fastnn.inference writes one table row per Conv2d (its ReLU
# and max-pool included) with the algorithm and buffers a checked call would use, and this
# runs them all: the same kernels, so the same bits as the layer-by-layer forward pass.

cdef extern from "finite.h" nogil:
    bint fastnn_all_finite32(const uint32_t* bits, size_t n)

# The columns of a chain row.
CHAIN_FIELDS = ("algorithm", "pool", "fused", "relu", "in_channels", "height", "width",
                "out_channels", "kernel_h", "kernel_w", "stride", "padding", "out_h", "out_w",
                "w", "b", "y", "argmax", "conv_out", "work", "kept", "w_kept", "state")
cdef enum:
    CH_ALGO = 0
    CH_POOL = 1
    CH_FUSED = 2
    CH_RELU = 3
    CH_CI = 4
    CH_H = 5
    CH_W = 6
    CH_CO = 7
    CH_KH = 8
    CH_KW = 9
    CH_STRIDE = 10
    CH_PAD = 11
    CH_HO = 12
    CH_WO = 13
    CH_WADDR = 14
    CH_BADDR = 15
    CH_YADDR = 16
    CH_ARGADDR = 17
    CH_CONVADDR = 18
    CH_WORKADDR = 19
    CH_KEPT = 20
    CH_WKEPT = 21
    CH_STATE = 22
    CH_COLUMNS = 23


def algorithm_code(name):
    """The table's code for an algorithm name of choose()."""
    return _ALGORITHM_CODES[name]


def kept_weights_size(x_shape, w_shape):
    """float32 elements of a chain row's `kept` buffer (Winograd's transformed weights, kept
    between calls) for a convolution of these shapes, padding 0 or more."""
    cdef fastnn_wino_shape s
    s.n, s.ci, s.h, s.w, s.co, s.pad = x_shape[0], x_shape[1], x_shape[2], x_shape[3], \
        w_shape[0], 0
    return fastnn_wino_kept_floats(&s)


@cython.boundscheck(False)
@cython.wraparound(False)
cdef void _maxpool_values(const float *x, Py_ssize_t planes, int h, int wd, int k,
                          float *y) noexcept nogil:
    """y = the k x k, stride k max-pool of each h x wd plane: the first maximum in window
    order, NaN over numbers, as maxpool_forward (which also keeps the argmax)."""
    cdef Py_ssize_t plane
    cdef int ph = h // k, pw = wd // k, oh, ow, i, j
    cdef const float *xp
    cdef float best, v
    for plane in range(planes):
        xp = x + plane * h * wd
        for oh in range(ph):
            for ow in range(pw):
                best = xp[oh * k * wd + ow * k]
                for i in range(k):
                    for j in range(k):
                        v = xp[(oh * k + i) * wd + ow * k + j]
                        if v > best or (v != v and best == best):
                            best = v
                y[(plane * ph + oh) * pw + ow] = best


cdef void _chain_stage(const int64_t *row, const float *x, int n, int nt) noexcept nogil:
    cdef int algo = <int>row[CH_ALGO], pool = <int>row[CH_POOL], fused = <int>row[CH_FUSED]
    cdef bint relu = row[CH_RELU] != 0
    cdef int ci = <int>row[CH_CI], h = <int>row[CH_H], wd = <int>row[CH_W], co = <int>row[CH_CO]
    cdef int kh = <int>row[CH_KH], kw = <int>row[CH_KW], stride = <int>row[CH_STRIDE]
    cdef int padding = <int>row[CH_PAD], ho = <int>row[CH_HO], wo = <int>row[CH_WO]
    cdef const float *w = <const float *><size_t>row[CH_WADDR]
    cdef const float *b = <const float *><size_t>row[CH_BADDR]
    cdef float *y = <float *><size_t>row[CH_YADDR]
    cdef int *argmax = <int *><size_t>row[CH_ARGADDR]
    cdef float *work = <float *><size_t>row[CH_WORKADDR]
    # the convolution's own output: y itself, unless a max-pool runs after it
    cdef float *out = y if pool == 0 or fused else <float *><size_t>row[CH_CONVADDR]
    # kept: Winograd's transform of the weights, kept between calls (0: none)
    _forward32(algo, x, w, b, out, pool if fused else 0, argmax if fused else NULL, work, n, ci,
               h, wd, co, kh, kw, stride, padding, ho, wo, relu, nt,
               <float *><size_t>row[CH_KEPT], <float *><size_t>row[CH_WKEPT],
               <int64_t *><size_t>row[CH_STATE])
    if pool and not fused:
        _maxpool_values(out, <Py_ssize_t>n * co, ho, wo, pool, y)


def chain_forward(const float[:, ::1] x, const int64_t[:, ::1] table, bint check_finite=True,
                  int nthreads=0):
    """Run the convolutions of `table` (rows as CHAIN_FIELDS, written by fastnn.inference
    from arrays it checked and keeps alive, buffers with room for x's rows) on x, the batch
    flattened to (N, C*H*W), float32; each stage reads the previous one's y. With
    check_finite, NaN or infinity in x raises ValueError before any work."""
    cdef Py_ssize_t n = x.shape[0], stages = table.shape[0], i
    cdef int64_t pool
    cdef int nt = resolve_threads(nthreads)
    cdef bint finite = True
    cdef const float *h
    if table.shape[1] != CH_COLUMNS or stages < 1:
        raise ValueError(f"table must have one row of {CH_COLUMNS} entries per stage")
    if n > 2**31 - 1:
        raise ValueError(f"batch = {n} is too large for the kernels (at most 2**31 - 1)")
    if table[0, CH_CI] * table[0, CH_H] * table[0, CH_W] != x.shape[1]:
        raise ValueError(f"x must have {table[0, CH_CI] * table[0, CH_H] * table[0, CH_W]} "
                         f"features, got {x.shape[1]}")
    for i in range(1, stages):  # C comparisons: this runs on every predict call
        pool = max(table[i - 1, CH_POOL], 1)
        if (table[i, CH_CI] != table[i - 1, CH_CO] or table[i, CH_H] != table[i - 1, CH_HO] // pool
                or table[i, CH_W] != table[i - 1, CH_WO] // pool):
            raise ValueError(f"stage {i} does not take the output of stage {i - 1}")
    if n == 0:
        return
    if check_finite:
        with nogil:
            finite = fastnn_all_finite32(<const uint32_t *>&x[0, 0], <size_t>(n * x.shape[1]))
        if not finite:
            raise ValueError("x holds NaN or infinite values")
    with nogil:
        h = &x[0, 0]
        for i in range(stages):
            _chain_stage(&table[i, 0], h, <int>n, nt)
            h = <const float *><size_t>table[i, CH_YADDR]
