"""CudaBackend: the kernel contract (see fastnn/backends/numpy.py) on CuPy float32 arrays.

GEMMs go through cuBLAS (`xp.matmul`); everything around them is one of the kernels in
kernels/*.cu: the bias+ReLU epilogue, the ReLU mask fused with the bias gradient, im2col and
col2im, max-pool, softmax cross-entropy and the optimizer updates.

Nothing here waits for the GPU except where a number must come back: the loss is returned as
a 0-d device array (`float(loss)` syncs when the caller wants it), and `check_finite=True`
(the default, as in the reference) checks inputs on the device, which costs one sync per
check; callers that validated their data once pass `check_finite=False`, which also skips the
label and argmax range checks (the kernels then give NaN or skip bad entries, never reading
out of bounds).

Beyond the contract, the training loop gets whole-step pieces: `batch_gatherer` (a shuffled
batch's inputs and labels in one launch), `running_metrics` (the running loss, accuracy and a
non-finite-loss flag in one launch per step; the optimizer kernels skip their update once the
flag is set) and `sgd_step_many` / `adam_step_many` (every parameter in one launch). Backward
kernels take out=(dx, dw, db), so a layer's gradient arrays, and with them the optimizer's
device table of addresses, stay the same from step to step.

The backend is written against `self.xp` and a table of checked kernels, so the tests run this
same code with xp=numpy and the .cu kernels compiled for the CPU (tests/cuda/harness).
"""

import threading

import numpy as np

from ... import validation as checks
from ..base import Backend
from . import launch
from .kernels import Kernels
from .layers import CudaLayerKernels

_F32 = np.dtype(np.float32)


class CudaBackend(CudaLayerKernels, Backend):
    name = "cuda"
    dtypes = (_F32,)
    # the backward kernels write into out= (a layer's kept gradients keep the optimizer's
    # address table valid); the others return new arrays
    fills_out = frozenset({"linear_backward", "conv2d_backward"})
    # Most blocks per elementwise launch; past that each thread loops (grid-stride), which
    # keeps launches small. The tests lower it to exercise those loops on tiny arrays.
    max_blocks = 8192
    # Most floats in a convolution's im2col workspace (64 MiB): a larger batch is run in
    # chunks of samples, so predict and evaluate of any N fit. The tests lower it.
    workspace_floats = 1 << 24
    # Up to this many classes the loss runs one thread per row in a single block (and sums the
    # mean there); more classes get a block per row.
    row_softmax_classes = 32

    def __init__(self, *, threads=256, _xp=None, _kernels=None):
        """threads: CUDA threads per block (1 to 256). _xp/_kernels are for the tests' CPU run."""
        threads = checks.integer("threads", threads, 1)
        if threads > 256:
            raise ValueError(f"threads must be <= 256, got {threads}")
        if _xp is None:
            import cupy

            _xp = cupy
        self.xp = _xp
        self.kernels = _kernels if _kernels is not None else Kernels(launch.cupy_space(_xp))
        self.threads = threads
        # .guard: the running metrics of the epoch in progress (see running_metrics); .tables:
        # optimizer kind -> (arrays, (device address table, largest size)). Per thread: models
        # trained in parallel threads skip updates on their own loss only, and do not evict
        # each other's tables every step
        self._per_thread = threading.local()
        self._no_guard = None

    # ---- arrays -------------------------------------------------------------------------------

    def asarray(self, a, dtype=None):
        """`a` as a C-contiguous device array; floating point becomes float32 (the only float
        type the kernels compute in), integers keep their type."""
        if dtype is None:
            kind = getattr(a, "dtype", None)
            if kind is None:
                kind = np.asarray(a).dtype
            dtype = _F32 if np.dtype(kind).kind == "f" else kind
        elif np.dtype(dtype).kind == "f" and np.dtype(dtype) != _F32:
            raise TypeError(
                f"the cuda backend computes in float32 only, not {np.dtype(dtype).name}"
            )
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype=dtype))

    def to_numpy(self, a):
        get = getattr(a, "get", None)
        return get() if get is not None and not isinstance(a, np.ndarray) else np.asarray(a)

    def zeros(self, shape, dtype=np.float32):
        return self.xp.zeros(shape, dtype=dtype)

    def synchronize(self):
        """Wait until the GPU has finished all queued work."""
        cuda = getattr(self.xp, "cuda", None)
        if cuda is not None:
            cuda.get_current_stream().synchronize()

    # ---- argument checks ----------------------------------------------------------------------

    def _f32(self, name, a, ndim):
        a = checks.float_array(name, a, ndim, self.xp)
        if a.dtype != _F32:
            raise TypeError(
                f"{name} must be float32 (the cuda backend has no float64 kernels), "
                f"got {a.dtype.name}"
            )
        return a

    _float_array = _f32  # Backend's argument checks go through it

    def _grid(self, total):
        """Blocks for a grid-stride loop over `total` elements (capped: each thread loops)."""
        return max(1, min(-(-total // self.threads), self.max_blocks))

    def _reduce_threads(self, count):
        """Threads for a block that reduces `count` values: no more than needed, at most 256."""
        return max(1, min(self.threads, count))

    # ---- shared epilogues ---------------------------------------------------------------------

    def _bias_act(self, y, b, channels, inner, relu):
        if b is not None:
            self.kernels.bias_act(
                self._grid(y.size), self.threads, y, b, y.size, channels, inner, int(relu)
            )
        elif relu:
            self.kernels.relu_inplace(self._grid(y.size), self.threads, y, y.size)

    def _outputs(self, out, shapes):
        """out=(...) of a backward kernel checked against the result shapes (Nones kept)."""
        if out is None:
            return (None,) * len(shapes)
        if not isinstance(out, (tuple, list)) or len(out) != len(shapes):
            raise TypeError(f"out must be a tuple of {len(shapes)} arrays (or None), got {out!r}")
        return tuple(
            None if a is None else checks.writable_array(name, a, shape, _F32, self.xp)
            for name, a, shape in zip(("dx", "dw", "db"), out, shapes)
        )

    def _bias_grad(self, y, dy, outer, channels, inner, relu, db=None, transposed=False):
        """(dz, db): dz = dy * (y > 0) if relu else dy, db its sum per channel. transposed:
        dz laid out as (channels, outer, inner), always written (the conv backward's GEMM)."""
        if transposed:
            dz = self.xp.empty((channels, outer, inner), dtype=_F32)
        else:
            dz = self.xp.empty_like(dy) if relu else dy
        db = self.xp.empty(channels, dtype=_F32) if db is None else db
        if inner == 1 and not transposed:  # Linear: coalesced rows, see bias_grad_rows
            width = min(32, channels, self.threads)
            block = (width, max(1, min(self.threads // width, outer)))
            self.kernels.bias_grad_rows(
                -(-channels // width), block, dy, y, dz, db, outer, channels, int(relu)
            )
        else:
            self.kernels.bias_grad(
                channels,
                self._reduce_threads(outer * inner),
                dy,
                y,
                dz,
                db,
                outer,
                channels,
                inner,
                int(relu),
                int(transposed),
            )
        return dz, db

    # ---- linear -------------------------------------------------------------------------------

    def linear_forward(self, x, w, b, relu=False, *, check_finite=True, out=None, check=True):
        x, w, b = self._linear_args(x, w, b)
        if check_finite:
            self._finite("x", x)
        y = self.xp.matmul(x, w.T)
        self._bias_act(y, b, w.shape[0], 1, relu)
        return self._into(out, y)

    def linear_backward(
        self,
        x,
        w,
        y,
        dy,
        relu=False,
        *,
        check_finite=True,
        need_dx=True,
        out=None,
        work=None,
        check=True,
    ):
        """(dx, dw, db) as the reference; need_dx=False skips dx (returned as None), e.g.
        for the first layer. out=(dx, dw, db) receives them (any may be None): a layer's kept
        gradient arrays, so the optimizer's address table stays valid between steps."""
        x, w, _ = self._linear_args(x, w)
        out_shape = (x.shape[0], w.shape[0])
        y, dy, _ = self._output_gradient_args(x, y, dy, out_shape, check_finite)
        dx_out, dw_out, db_out = self._outputs(out, (x.shape, w.shape, (w.shape[0],)))
        dz, db = self._bias_grad(y, dy, x.shape[0], w.shape[0], 1, relu, db_out)
        dx = self.xp.matmul(dz, w, out=dx_out) if need_dx else None
        dw = self.xp.matmul(dz.T, x, out=dw_out)
        return dx, dw, db

    # ---- conv2d -------------------------------------------------------------------------------

    def _conv_args(self, x, w, b, stride, padding):
        x = self._f32("x", x, 4)
        w = self._f32("w", w, 4)
        b = None if b is None else self._f32("b", b, 1)
        return checks.conv_args(x, w, b, stride, padding, self.xp)

    def _chunks(self, n, per_sample):
        """(lo, hi) sample ranges whose im2col matrices fit in `workspace_floats` (at least one
        sample each), so a conv over any N needs a bounded workspace."""
        rows = max(1, min(n, self.workspace_floats // max(1, per_sample)))
        return [(lo, min(lo + rows, n)) for lo in range(0, n, rows)]

    def _im2col(self, x, w_shape, stride, padding, out_hw, out, tap_major=False):
        """The column matrix of x into `out`: (N, K, P), or (K, N*P) when tap_major."""
        _, c, h, wd = x.shape
        _, _, kh, kw = w_shape
        ho, wo = out_hw
        self.kernels.im2col(
            self._grid(out.size),
            self.threads,
            x,
            out,
            out.size,
            c,
            h,
            wd,
            kh,
            kw,
            stride,
            padding,
            ho,
            wo,
            int(tap_major),
        )
        return out

    def _col_workspace(self, chunks, w_shape, out_hw):
        rows = chunks[0][1] - chunks[0][0]
        taps = w_shape[1] * w_shape[2] * w_shape[3]
        return self.xp.empty((rows, taps, out_hw[0] * out_hw[1]), dtype=_F32)

    def conv2d_forward(
        self, x, w, b, stride=1, padding=0, relu=False, *, check_finite=True, out=None, check=True
    ):
        x, w, b, stride, padding, (n, co, ho, wo) = self._conv_args(x, w, b, stride, padding)
        if check_finite:
            self._finite("x", x)
        w2 = w.reshape(co, -1)
        chunks = self._chunks(n, w2.shape[1] * ho * wo)
        col = self._col_workspace(chunks, w.shape, (ho, wo))
        if len(chunks) == 1:
            # (C_out, K) @ (N, K, P) -> (N, C_out, P): NCHW straight from a batched cuBLAS GEMM
            y = self.xp.matmul(w2, self._im2col(x, w.shape, stride, padding, (ho, wo), col))
        else:
            y = self.xp.empty((n, co, ho * wo), dtype=_F32)
            for lo, hi in chunks:
                part = self._im2col(x[lo:hi], w.shape, stride, padding, (ho, wo), col[: hi - lo])
                self.xp.matmul(w2, part, out=y[lo:hi])
        self._bias_act(y, b, co, ho * wo, relu)
        return self._into(out, y.reshape(n, co, ho, wo))

    def conv2d_backward(
        self,
        x,
        w,
        y,
        dy,
        stride=1,
        padding=0,
        relu=False,
        *,
        check_finite=True,
        need_dx=True,
        out=None,
        check=True,
    ):
        """(dx, dw, db) as the reference; need_dx=False skips dx (returned as None);
        out=(dx, dw, db) receives them, as linear_backward."""
        x, w, _, stride, padding, out_shape = self._conv_args(x, w, None, stride, padding)
        y, dy, _ = self._output_gradient_args(x, y, dy, out_shape, check_finite)
        n, co, ho, wo = out_shape
        positions = ho * wo
        dx_out, dw_out, db_out = self._outputs(out, (x.shape, w.shape, (co,)))
        # dz as one (C_out, N*P) matrix: dw = dz @ col.T over all samples in one GEMM, with the
        # column matrix tap-major (K, N*P); no (N, C_out, K) product to sum, no transposed copy
        dz, db = self._bias_grad(y, dy, n, co, positions, relu, db_out, transposed=True)
        w2 = w.reshape(co, -1)
        taps = w2.shape[1]
        chunks = self._chunks(n, taps * positions)
        workspace = self.xp.empty(taps * (chunks[0][1] - chunks[0][0]) * positions, dtype=_F32)
        dw = self.xp.empty((co, taps), dtype=_F32) if dw_out is None else dw_out.reshape(co, -1)
        dx = (self.xp.empty(x.shape, dtype=_F32) if dx_out is None else dx_out) if need_dx else None
        _, c, h, wd = x.shape
        _, _, kh, kw = w.shape
        for lo, hi in chunks:
            col = workspace[: taps * (hi - lo) * positions].reshape(taps, -1)
            self._im2col(x[lo:hi], w.shape, stride, padding, (ho, wo), col, tap_major=True)
            dz_part = (
                dz.reshape(co, -1)
                if len(chunks) == 1
                else self.xp.ascontiguousarray(dz[:, lo:hi]).reshape(co, -1)
            )
            if lo == 0:
                self.xp.matmul(dz_part, col.T, out=dw)
            else:
                dw += self.xp.matmul(dz_part, col.T)
            if need_dx:
                dcol = self.xp.matmul(w2.T, dz_part)  # (K, samples*P), tap-major
                target = dx[lo:hi]
                self.kernels.col2im(
                    self._grid(target.size),
                    self.threads,
                    dcol,
                    target,
                    target.size,
                    c,
                    h,
                    wd,
                    kh,
                    kw,
                    stride,
                    padding,
                    ho,
                    wo,
                    1,
                )
        return dx, (dw.reshape(w.shape) if dw_out is None else dw_out), db

    # ---- max-pool -----------------------------------------------------------------------------

    def maxpool2d_forward(
        self, x, kernel=2, stride=None, *, check_finite=True, out=None, check=True
    ):
        x = self._f32("x", x, 4)
        kernel, stride, y_shape = checks.pool_args(x.shape, kernel, stride)
        if check_finite:
            self._finite("x", x)
        n, c, ho, wo = y_shape
        y = self.xp.empty(y_shape, dtype=_F32)
        argmax = self.xp.empty(y_shape, dtype=np.int32)
        self.kernels.maxpool_forward(
            self._grid(y.size),
            self.threads,
            x,
            y,
            argmax,
            y.size,
            x.shape[2],
            x.shape[3],
            ho,
            wo,
            kernel,
            stride,
        )
        if out is None:
            return y, argmax
        return self._into(out[0], y), self._into(out[1], argmax)

    def maxpool2d_backward(
        self, dy, argmax, x_shape, kernel=2, stride=None, *, check_finite=True, out=None, check=True
    ):
        dy = self._f32("dy", dy, 4)
        x_shape = checks.shape_tuple("x_shape", x_shape)
        kernel, stride, y_shape = checks.pool_args(x_shape, kernel, stride)
        checks.expect_shape("dy", dy, y_shape)
        n, c, h, w = x_shape
        if check_finite:
            argmax = checks.argmax_array(argmax, y_shape, h * w, self.xp)  # syncs: range check
            self._finite("dy", dy)
        else:
            argmax = self._int_array("argmax", argmax, y_shape, np.int32)
        dx = self.xp.empty(x_shape, dtype=_F32)
        self.kernels.maxpool_backward(
            self._grid(dx.size),
            self.threads,
            dy,
            argmax,
            dx,
            dx.size,
            h,
            w,
            y_shape[2],
            y_shape[3],
            kernel,
            stride,
        )
        return self._into(out, dx)

    def _int_array(self, name, a, shape, dtype):
        if not isinstance(a, self.xp.ndarray):
            raise TypeError(f"{name} must be a {self.xp.__name__} ndarray, got {type(a).__name__}")
        if a.dtype.kind not in "iu":
            raise TypeError(f"{name} must be an integer array, got {a.dtype.name}")
        checks.expect_shape(name, a, shape)
        return self.xp.ascontiguousarray(a, dtype=dtype)

    # ---- loss ---------------------------------------------------------------------------------

    def softmax_cross_entropy(self, logits, labels, *, check_finite=True, out=None, check=True):
        """(mean loss as a 0-d device array, dlogits already divided by N).

        Labels may be a NumPy array (checked on the host, then copied over) or a device array
        (its range check needs a sync, skipped with check_finite=False)."""
        logits = self._f32("logits", logits, 2)
        n, classes = checks.logits_size(logits)
        if not isinstance(labels, self.xp.ndarray):  # host labels: checked for free, copied
            labels = self.xp.asarray(checks.labels("labels", labels, n, classes))
        elif check_finite:
            labels = checks.labels("labels", labels, n, classes, self.xp)
        else:
            labels = self._int_array("labels", labels, (n,), np.int64)
        if check_finite:
            self._finite("logits", logits)
        dlogits = self.xp.empty_like(logits)
        if classes <= self.row_softmax_classes:  # one launch, the mean included
            loss = self.xp.empty((), dtype=_F32)
            self.kernels.softmax_xent_rows(
                1, self._reduce_threads(n), logits, labels, dlogits, loss, n, classes
            )
            return loss, self._into(out, dlogits)
        row_loss = self.xp.empty(n, dtype=_F32)
        self.kernels.softmax_xent(
            n, self._reduce_threads(classes), logits, labels, dlogits, row_loss, n, classes
        )
        return row_loss.mean(), self._into(out, dlogits)

    # ---- optimizer updates (in place) ---------------------------------------------------------

    def _step_args(self, param, grad, **state):
        """Backend._sgd_args/_adam_args's checks, float32 only."""
        param = checks.writable_float("param", param, self.xp)
        if param.dtype != _F32:
            raise TypeError(f"param must be float32, got {param.dtype.name}")
        grad = self._f32("grad", grad, param.ndim)
        checks.expect_shape("grad", grad, param.shape)
        for name, a in state.items():
            if a is not None:
                checks.writable_array(name, a, param.shape, param.dtype, self.xp)
        return param, grad

    def sgd_step(
        self, param, grad, velocity=None, *, lr, momentum=0.0, weight_decay=0.0, nesterov=False
    ):
        """PyTorch's SGD, in place (see NumpyBackend.sgd_step)."""
        param, grad, lr, momentum, weight_decay = self._sgd_args(
            param, grad, velocity, lr, momentum, weight_decay, nesterov
        )
        # without momentum the kernel never touches `velocity`; param stands in for it
        self.kernels.sgd_update(
            self._grid(param.size),
            self.threads,
            param,
            grad,
            velocity if momentum else param,
            param.size,
            lr,
            momentum,
            weight_decay,
            int(nesterov),
            self._update_guard(),
        )

    def adam_step(
        self, param, grad, m, v, *, lr, step, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0
    ):
        """PyTorch's Adam, in place (see NumpyBackend.adam_step)."""
        param, grad, lr, step, beta1, beta2, eps, weight_decay = self._adam_args(
            param, grad, m, v, lr, step, beta1, beta2, eps, weight_decay
        )
        self.kernels.adam_update(
            self._grid(param.size),
            self.threads,
            param,
            grad,
            m,
            v,
            param.size,
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            1.0 - beta1**step,
            1.0 - beta2**step,
            self._update_guard(),
        )

    # ---- the training loop's batch gather (an extension of the kernel contract) ---------------

    def batch_gatherer(self, x, y, x_out, y_out):
        """A function gather(index) -> (x_out[:k] = x[index], y_out[:k] = y[index]) for int64
        device indices of length k, in one launch; the arrays are checked here once."""
        x = self._f32("x", x, x.ndim)
        for name, a, like in (("x_out", x_out, x), ("y", y, None), ("y_out", y_out, None)):
            dtype = _F32 if like is not None else np.dtype(np.int64)
            shape = (a.shape[0], *x.shape[1:]) if like is not None else (a.shape[0],)
            checks.writable_array(name, a, shape, dtype, self.xp)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"y has {y.shape[0]} labels for {x.shape[0]} samples")
        row_size = x.size // max(1, x.shape[0])
        kernel, samples = self.kernels.gather_batch, x.shape[0]

        def gather(index):
            rows = index.shape[0]
            xb, yb = x_out[:rows], y_out[:rows]
            kernel(
                self._grid(rows * row_size),
                self.threads,
                x,
                y,
                index,
                xb,
                yb,
                rows * row_size,
                row_size,
                samples,
            )
            return xb, yb

        return gather

    # ---- every parameter in one launch (an extension of the kernel contract) -------------------

    @staticmethod
    def _address(a):
        data = a.data
        return data.ptr if hasattr(data, "ptr") else a.ctypes.data  # CuPy, else NumPy (tests)

    def _address_table(self, checked):
        """Backend._update_table's device table of the checked groups' addresses (one row per
        parameter, its size last) and the largest size."""
        rows = [[0 if a is None else self._address(a) for a in g] + [g[0].size] for g in checked]
        table = self.xp.asarray(np.array(rows, dtype=np.int64))
        return table, max(g[0].size for g in checked)

    def _many_grid(self, largest, count):
        if count > 65535:
            raise ValueError(f"at most 65535 parameters per update, got {count}")
        return (self._grid(largest), count)

    def sgd_step_many(
        self, params, grads, velocities=None, *, lr, momentum=0.0, weight_decay=0.0, nesterov=False
    ):
        """sgd_step on each (param, grad, velocity) of the lists, in one launch."""
        many = self._sgd_groups(params, grads, velocities, lr, momentum, weight_decay, nesterov)
        if many is None:
            return
        groups, check_group, lr, momentum, weight_decay = many
        table, largest = self._update_table(("sgd", bool(momentum)), groups, check_group)
        self.kernels.sgd_update_many(
            self._many_grid(largest, len(params)),
            self.threads,
            table,
            lr,
            momentum,
            weight_decay,
            int(nesterov),
            self._update_guard(),
        )

    def adam_step_many(
        self, params, grads, ms, vs, *, lr, step, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0
    ):
        """adam_step on each (param, grad, m, v) of the lists, in one launch."""
        many = self._adam_groups(params, grads, ms, vs, lr, step, beta1, beta2, eps, weight_decay)
        if many is None:
            return
        groups, check_group, lr, step, beta1, beta2, eps, weight_decay = many
        table, largest = self._update_table("adam", groups, check_group)
        self.kernels.adam_update_many(
            self._many_grid(largest, len(params)),
            self.threads,
            table,
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
            1.0 - beta1**step,
            1.0 - beta2**step,
            self._update_guard(),
        )

    # ---- the training loop's running numbers (an extension of the kernel contract) ------------

    @property
    def _guard(self):
        return getattr(self._per_thread, "guard", None)

    @_guard.setter
    def _guard(self, values):
        self._per_thread.guard = values

    def _update_guard(self):
        """The array whose [2] the optimizer kernels check (non-zero: skip the update): the
        running metrics of the epoch in progress, else zeros."""
        if self._guard is not None:
            return self._guard
        if self._no_guard is None:
            self._no_guard = self.xp.zeros(3, dtype=_F32)
        return self._no_guard

    def running_metrics(self):
        """A RunningMetrics for one epoch of Trainer.fit; while it is open, a non-finite loss
        it sees makes every optimizer update skip (until close())."""
        return RunningMetrics(self)


class RunningMetrics:
    """An epoch's loss sum, correct count and first non-finite step, kept on the device: one
    launch per step (step_metrics), read back only at the loop's sync points."""

    def __init__(self, backend):
        self.backend = backend
        self.values = backend.xp.zeros(3, dtype=_F32)
        backend._guard = self.values

    def add(self, loss, outputs, labels, step):
        """Count one step: its mean loss (a 0-d device array), outputs (rows, classes) and
        int64 labels; step counts from 1."""
        b = self.backend
        outputs = b.xp.ascontiguousarray(outputs)
        rows, classes = outputs.shape
        b.kernels.step_metrics(
            1,
            b._reduce_threads(rows),
            b.xp.ascontiguousarray(loss),
            outputs,
            labels,
            self.values,
            rows,
            classes,
            step,
        )

    def read(self):
        """(loss sum, correct rows, first non-finite step or 0): one sync."""
        loss_sum, correct, bad_step = (float(v) for v in self.backend.to_numpy(self.values))
        return loss_sum, int(correct), int(bad_step)

    def close(self):
        if self.backend._guard is self.values:
            self.backend._guard = None
