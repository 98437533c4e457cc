"""The CPU backend: checked thin wrappers over the compiled kernels in fastnn._kernels.

Same contract and same argument checks as the NumPy reference (see fastnn.backends.base; every
kernel is written here, none borrowed). Every kernel writes into `out=` arrays (shaped like its
return value), so a training step can run without allocating; arrays written by a kernel must be
C-contiguous, of the right shape and dtype, and must not overlap the arrays it reads.

check=False with out= given (a model's training pass into its own buffers) calls the kernels
directly: nothing is copied, realigned or scanned for NaN, and the overlap checks are skipped.
The kernels still refuse wrong shapes with a ValueError, and an input that is not C-contiguous,
aligned and of the weights' dtype takes the checked path.
"""

import threading

import numpy as np

from .. import validation as checks
from .base import Backend
from .cpu_layers import CpuLayerKernels, _finite, _output

try:
    from fastnn._kernels import conv as _conv
    from fastnn._kernels import dense as _dense
    from fastnn._kernels import loss as _loss
    from fastnn._kernels import optim as _optim
    from fastnn._kernels import pool as _pool
    from fastnn._kernels import runtime as _runtime
except ImportError as exc:  # a source checkout that was never built
    _IMPORT_ERROR = exc
else:
    _IMPORT_ERROR = None


def probe():
    """None when the compiled kernels import, else why this backend cannot run."""
    if _IMPORT_ERROR is not None:
        return (
            f"fastnn's compiled kernels are missing: reinstall with `pip install .` in "
            f"the fastnn checkout ({_IMPORT_ERROR})"
        )
    return None


def _output_tuple(out, count):
    if out is None:
        return (None,) * count
    if not isinstance(out, (tuple, list)) or len(out) != count:
        raise TypeError(f"out must be a tuple of {count} arrays (or None), got {out!r}")
    return tuple(out)


def _distinct(**outputs):
    """Outputs written by one call must not overlap each other."""
    items = [(k, v) for k, v in outputs.items() if v is not None]
    for i, (name, a) in enumerate(items):
        for other, b in items[i + 1 :]:
            if np.may_share_memory(a, b):
                raise ValueError(f"{name} must not overlap {other}")


def _gradient_outputs(out, x, w, dtype, need_dx, reads):
    """(dx or None, dw, db): out=(dx, dw, db)'s arrays checked (any may be None: new ones)."""
    dx_out, dw_out, db_out = _output_tuple(out, 3)
    dx = _output("dx", dx_out, x.shape, dtype, reads) if need_dx else None
    dw = _output("dw", dw_out, w.shape, dtype, reads)
    db = _output("db", db_out, (w.shape[0],), dtype, reads)
    return dx, dw, db


def _trusted(out, *reads):
    """Whether a check=False call may go straight to the kernel: outputs given, and every
    array read C-contiguous, aligned and of the first one's dtype."""
    if out is None:
        return False
    dtype = reads[0].dtype
    return all(checks.is_plain(a, dtype) for a in reads)


class CpuBackend(CpuLayerKernels, Backend):
    name = "cpu"
    xp = np
    fills_out = frozenset(
        Backend.KERNELS
        + ("conv2d_maxpool_forward", "conv2d_maxpool_backward", "smoothed_cross_entropy")
    )
    fuses_conv2d_maxpool = True
    optional = frozenset(Backend.OPTIONAL_KERNELS)
    runs_dense_chain = True
    _finite = staticmethod(_finite)  # Backend's checks scan with the compiled kernel here

    def __init__(self):
        # .tables: optimizer kind -> (the arrays, (address table, first parameter)); per thread,
        # so models trained in parallel threads do not evict each other's tables every step
        self._per_thread = threading.local()

    # ---- linear -------------------------------------------------------------------------------

    def linear_forward(self, x, w, b, relu=False, *, check_finite=True, out=None, check=True):
        """y = x @ w.T + b (b may be None), ReLU if relu: one GEMM with bias and ReLU fused into
        its store. out= receives y, shape (N, out_features)."""
        if check or not (_trusted(out, x, w) and x.ndim == 2 and x.shape[1] == w.shape[1]):
            x, w, b = self._linear_args(x, w, b)
            if check_finite:
                _finite("x", x)
            out = _output("out", out, (x.shape[0], w.shape[0]), x.dtype, {"x": x, "w": w, "b": b})
        _dense.linear_forward(x, w, b, bool(relu), out)
        return out

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
        """(dx, dw, db) as the reference. out=(dx, dw, db) reuses arrays (any may be None);
        work, shape (N, out_features), holds the ReLU-masked dy (it may be dy itself, which is
        then overwritten). need_dx=False skips dx (returned as None), e.g. for the first
        layer."""
        if not check and _trusted(out, x, w, dy) and (work is not None or not relu):
            # y is the forward pass's output, work the caller's scratch (or dy itself)
            dx, dw, db = out
            _dense.linear_backward(
                x, w, y, dy, bool(relu), dx if need_dx else None, dw, db, work if relu else None
            )
            return dx if need_dx else None, dw, db
        x, w, _ = self._linear_args(x, w)
        out_shape = (x.shape[0], w.shape[0])
        y, dy, dtype = self._output_gradient_args(x, y, dy, out_shape, check_finite)
        reads = {"x": x, "w": w, "y": y, "dy": dy}
        dx, dw, db = _gradient_outputs(out, x, w, dtype, need_dx, reads)
        if not relu:
            work = None
        elif work is dy:  # mask in place: each element is read before it is written
            work = checks.writable_array("work", work, out_shape, dtype)
        else:
            work = _output("work", work, out_shape, dtype, reads)
        if out is not None or work is not None:
            _distinct(dx=dx, dw=dw, db=db, work=work)
        _dense.linear_backward(x, w, y, dy, bool(relu), dx, dw, db, work)
        return dx, dw, db

    # ---- conv2d -------------------------------------------------------------------------------
    # CONV2D: thin wrappers over fastnn/_kernels/conv.pyx (im2col + GEMM; direct kernels for one
    # input channel and Winograd for 5x5, float32).

    def conv2d_forward(
        self,
        x,
        w,
        b,
        stride=1,
        padding=0,
        relu=False,
        *,
        check_finite=True,
        out=None,
        check=True,
        workspace=None,
    ):
        """y as the reference (NCHW). out= receives y; workspace= is scratch for the kernel.
        Always checked: the checks are small beside a convolution."""
        x, w, b, stride, padding, y_shape = checks.conv_args(x, w, b, stride, padding)
        if check_finite:
            _finite("x", x)
        y = _output("out", out, y_shape, x.dtype, {"x": x, "w": w, "b": b})
        _conv.forward(
            x,
            w,
            b,
            y,
            stride,
            padding,
            bool(relu),
            nthreads=_runtime.threads_now(),
            workspace=workspace,
        )
        return y

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
        workspace=None,
    ):
        """(dx, dw, db) as the reference. out=(dx, dw, db) reuses arrays (any may be None);
        need_dx=False skips dx (returned as None), e.g. for the first
        layer."""
        x, w, _, stride, padding, y_shape = checks.conv_args(x, w, None, stride, padding)
        y, dy, dtype = self._output_gradient_args(x, y, dy, y_shape, check_finite)
        reads = {"x": x, "w": w, "y": y, "dy": dy}
        dx, dw, db = _gradient_outputs(out, x, w, dtype, need_dx, reads)
        if out is not None:
            _distinct(dx=dx, dw=dw, db=db)
        _conv.backward(
            x,
            w,
            y,
            dy,
            dx,
            dw,
            db,
            stride,
            padding,
            bool(relu),
            nthreads=_runtime.threads_now(),
            workspace=workspace,
        )
        return dx, dw, db

    # ---- conv2d + ReLU + max-pool, fused (an extension of the kernel contract) -----------------

    def conv2d_maxpool_fusable(
        self, x_shape, w_shape, dtype, stride=1, padding=0, pool=2, *, need_dx=True
    ):
        """Whether conv2d_maxpool_backward (with need_dx=False: conv2d_maxpool_forward) runs one
        fused kernel for these arguments rather than its allocating two-kernel fallback, so a
        model can run the two kernels itself, into buffers it keeps, where they do not fuse."""
        x_shape, w_shape = tuple(x_shape), tuple(w_shape)
        if len(x_shape) != 4 or len(w_shape) != 4:  # the kernels' own checks say what is wrong
            return False
        return bool(
            _conv.fusable(x_shape, w_shape, np.dtype(dtype), stride, padding, pool, need_dx=need_dx)
        )

    def conv2d_maxpool_forward(
        self,
        x,
        w,
        b,
        stride=1,
        padding=0,
        relu=False,
        pool=2,
        *,
        check_finite=True,
        out=None,
        check=True,
    ):
        """maxpool2d_forward(conv2d_forward(x, w, b, stride, padding, relu), pool): (y, argmax),
        y of shape (N, Co, Ho // pool, Wo // pool), argmax indexing each Ho x Wo plane of the
        convolution's output, as those two kernels give them. Where the conv kernels can fuse
        them (float32, stride 1, one input channel or a 5x5 kernel) the convolution's output
        never leaves the cache; otherwise the two kernels run. out=(y, argmax) reuses arrays.
        check=False: only where conv2d_maxpool_fusable said so for these shapes."""
        if not check and _trusted(out, x, w):
            _conv.forward_maxpool(
                x,
                w,
                b,
                out[0],
                out[1],
                stride,
                padding,
                bool(relu),
                pool,
                nthreads=_runtime.threads_now(),
            )
            return out
        x, w, b, stride, padding, conv_shape = checks.conv_args(x, w, b, stride, padding)
        pool, _, y_shape = checks.pool_args(conv_shape, pool, None)
        if check_finite:
            _finite("x", x)
        if not _conv.fusable(x.shape, w.shape, x.dtype, stride, padding, pool, need_dx=False):
            y = self.conv2d_forward(x, w, b, stride, padding, relu, check_finite=False)
            return self.maxpool2d_forward(y, pool, check_finite=False, out=out)
        y_out, argmax_out = _output_tuple(out, 2)
        reads = {"x": x, "w": w, "b": b}
        y = _output("y", y_out, y_shape, x.dtype, reads)
        argmax = _output("argmax", argmax_out, y_shape, np.int32, reads)
        if out is not None:
            _distinct(y=y, argmax=argmax)
        _conv.forward_maxpool(
            x, w, b, y, argmax, stride, padding, bool(relu), pool, nthreads=_runtime.threads_now()
        )
        return y, argmax

    def conv2d_maxpool_backward(
        self,
        x,
        w,
        y,
        argmax,
        dy,
        stride=1,
        padding=0,
        relu=False,
        pool=2,
        *,
        check_finite=True,
        need_dx=True,
        out=None,
        check=True,
    ):
        """(dx, dw, db) of conv2d_maxpool_forward, given its outputs y and argmax and the
        gradient dy at y: maxpool2d_backward then conv2d_backward (the ReLU mask is y > 0 at
        each window's maximum, the only place a gradient goes), fused where the forward pass
        was. argmax must be what the forward pass returned: where the kernels are fused, an
        entry outside its own window is ignored. out=(dx, dw, db), need_dx as conv2d_backward.
        check=False: only after a fused forward pass, into the caller's arrays."""
        if not check and _trusted(out, x, w, dy):
            dx, dw, db = out
            _conv.backward_maxpool(
                x,
                w,
                y,
                argmax,
                dy,
                dx if need_dx else None,
                dw,
                db,
                stride,
                padding,
                bool(relu),
                pool,
                nthreads=_runtime.threads_now(),
            )
            return dx if need_dx else None, dw, db
        x, w, _, stride, padding, conv_shape = checks.conv_args(x, w, None, stride, padding)
        pool, _, y_shape = checks.pool_args(conv_shape, pool, None)
        y, dy, dtype = self._output_gradient_args(x, y, dy, y_shape, check_finite)
        if not _conv.fusable(x.shape, w.shape, dtype, stride, padding, pool, need_dx=need_dx):
            argmax = checks.argmax_array(argmax, y_shape, conv_shape[2] * conv_shape[3])
            return self._conv2d_maxpool_backward_unfused(
                x, w, y, argmax, dy, stride, padding, relu, pool, conv_shape, out, need_dx
            )
        if not isinstance(argmax, np.ndarray) or argmax.dtype.kind not in "iu":
            raise TypeError(
                f"argmax must be an integer numpy.ndarray, got "
                f"{getattr(argmax, 'dtype', type(argmax).__name__)}"
            )
        checks.expect_shape("argmax", argmax, y_shape)
        argmax = checks.contiguous(argmax, np.int32)  # aligned, too
        reads = {"x": x, "w": w, "y": y, "argmax": argmax, "dy": dy}
        dx, dw, db = _gradient_outputs(out, x, w, dtype, need_dx, reads)
        if out is not None:
            _distinct(dx=dx, dw=dw, db=db)
        _conv.backward_maxpool(
            x,
            w,
            y,
            argmax,
            dy,
            dx,
            dw,
            db,
            stride,
            padding,
            bool(relu),
            pool,
            nthreads=_runtime.threads_now(),
        )
        return dx, dw, db

    # ---- max-pool -----------------------------------------------------------------------------

    def maxpool2d_forward(
        self, x, kernel=2, stride=None, *, check_finite=True, out=None, check=True
    ):
        """(y, argmax) as the reference; out=(y, argmax) reuses arrays of shape (N, C, Ho, Wo)."""
        x = checks.float_array("x", x, 4)
        kernel, stride, y_shape = checks.pool_args(x.shape, kernel, stride)
        if check_finite:
            _finite("x", x)
        y_out, argmax_out = _output_tuple(out, 2)
        y = _output("y", y_out, y_shape, x.dtype, {"x": x})
        argmax = _output("argmax", argmax_out, y_shape, np.int32, {"x": x})
        if out is not None:
            _distinct(y=y, argmax=argmax)
        n, c, h, w = x.shape
        ho, wo = y_shape[2], y_shape[3]
        _pool.maxpool_forward(
            x.reshape(n * c, h * w),
            h,
            w,
            kernel,
            stride,
            y.reshape(n * c, ho * wo),
            argmax.reshape(n * c, ho * wo),
            ho,
            wo,
        )
        return y, argmax

    def maxpool2d_backward(
        self, dy, argmax, x_shape, kernel=2, stride=None, *, check_finite=True, out=None, check=True
    ):
        dy, argmax, x_shape, kernel, stride, y_shape = self._maxpool_backward_args(
            dy, argmax, x_shape, kernel, stride
        )
        n, c, h, w = x_shape
        if check_finite:
            _finite("dy", dy)
        dx = _output("dx", out, x_shape, dy.dtype, {"dy": dy, "argmax": argmax})
        planes = n * c
        bad = _pool.maxpool_backward(
            dy.reshape(planes, -1), argmax.reshape(planes, -1), dx.reshape(planes, h * w)
        )
        if bad:  # unreachable after checks.argmax_array; the kernel skipped them, never wrote
            raise ValueError(f"argmax indices must be in [0, {h * w}), found {bad} outside")
        return dx

    # ---- loss ---------------------------------------------------------------------------------

    def softmax_cross_entropy(self, logits, labels, *, check_finite=True, out=None, check=True):
        """(mean_loss, dlogits) as the reference. out= receives dlogits; it may be `logits`
        itself (the gradient then replaces the logits). The kernel checks int64 labels against
        [0, classes) itself, in one cheap pass, so check=False still refuses bad labels."""
        if (
            not check
            and _trusted(out, logits, out)
            and out.shape == logits.shape
            and checks.is_plain(labels, np.int64)
        ):
            return logits.dtype.type(_loss.softmax_cross_entropy(logits, labels, out)), out
        logits = checks.float_array("logits", logits, 2)
        n, classes = checks.logits_size(logits)
        if not (
            isinstance(labels, np.ndarray) and labels.dtype == np.int64 and labels.shape == (n,)
        ):
            labels = checks.labels("labels", labels, n, classes)
        # else: the kernel checks int64 labels against [0, classes) itself, in one cheap pass
        if check_finite:
            _finite("logits", logits)
        if out is logits:
            dlogits = checks.writable_array("out", out, logits.shape, logits.dtype)
        else:
            dlogits = _output("out", out, logits.shape, logits.dtype, {"logits": logits})
        loss = _loss.softmax_cross_entropy(logits, checks.contiguous(labels), dlogits)
        return logits.dtype.type(loss), dlogits

    def dense_chain_forward(self, x, table, labels):
        """(x, table of layers, int64 labels or None): see fastnn.inference."""
        _dense.chain_forward(x, table, labels)

    def gather_rows(self, x, index, out):
        """out[:] = x[index] (rows of x, any dtype; out C-contiguous), with the rows split over
        the threads. Returns out."""
        index = checks.contiguous(index, np.int64)
        if not isinstance(out, np.ndarray) or index.shape != (out.shape[0],):
            raise ValueError(
                f"index must have shape ({getattr(out, 'shape', (0,))[0]},), got {index.shape}"
            )
        return self.row_gatherer(x, out)(index)

    def row_gatherer(self, x, out):
        """A function gather(index) -> out[:len(index)] = x[index], with x and out checked here
        once (gather_rows checks them on every call): the training loop's batch gather, one
        kernel call per step. index must be int64; out bounds its length. uint8 x with a
        float32/float64 out: the rows scaled to [0, 1] on the way (gather_rows_scaled)."""
        if not (isinstance(x, np.ndarray) and isinstance(out, np.ndarray)):
            raise TypeError("x and out must be numpy arrays")
        scaled = x.dtype == np.uint8 and out.dtype in (np.float32, np.float64)
        if x.shape[1:] != out.shape[1:] or not (scaled or x.dtype == out.dtype):
            raise ValueError(
                f"out must hold rows of x ({x.dtype}, {x.shape[1:]}), got "
                f"{out.dtype}, {out.shape[1:]}"
            )
        out = checks.writable_array("out", out, out.shape, out.dtype)
        src = checks.contiguous(x).reshape(x.shape[0], -1)
        dst = out.reshape(out.shape[0], -1)
        if scaled:
            kernel = _runtime.gather_rows_scaled
        else:  # any dtype, as raw bytes
            kernel, src, dst = _runtime.gather_rows, src.view(np.uint8), dst.view(np.uint8)

        def gather(index):
            rows = index.shape[0]
            kernel(src, index, dst[:rows])  # index bounds and dtype are the kernel's to check
            return out if rows == out.shape[0] else out[:rows]

        return gather

    def count_correct(self, outputs, labels):
        """Rows of `outputs` whose argmax is the label (as outputs.argmax(axis=1) == labels),
        in one pass: the training loop's running accuracy."""
        outputs = checks.float_array("outputs", outputs, 2)
        if not (isinstance(labels, np.ndarray) and labels.dtype == np.int64):
            labels = np.asarray(labels, dtype=np.int64)
        return int(_loss.count_correct(outputs, checks.contiguous(labels)))

    # ---- optimizer updates (in place) ---------------------------------------------------------

    def sgd_step(
        self, param, grad, velocity=None, *, lr, momentum=0.0, weight_decay=0.0, nesterov=False
    ):
        param, grad, lr, momentum, weight_decay = self._sgd_args(
            param, grad, velocity, lr, momentum, weight_decay, nesterov
        )
        velocity = velocity if momentum else None
        # param, grad and state are updated elementwise: overlapping ones would be order-dependent
        _distinct(param=param, grad=grad, velocity=velocity)
        _optim.sgd_step(
            param.reshape(-1),
            grad.reshape(-1),
            None if velocity is None else velocity.reshape(-1),
            lr,
            momentum,
            weight_decay,
            bool(nesterov),
        )

    # ---- every parameter of a model in one call (an extension of the kernel contract) ---------

    def _address_table(self, checked):
        """Backend._update_table's table of the checked groups, their ranges checked for
        overlap: (table, the first parameter, flat: the kernel takes its type from it)."""
        dtype = checked[0][0].dtype
        if any(g[0].dtype != dtype for g in checked):
            raise TypeError("all parameters must share one dtype")
        table = _optim.address_table(checked)
        ranges = sorted(
            (address, address + size * dtype.itemsize)
            for *addresses, size in table.tolist()
            for address in addresses
            if address and size
        )
        for (_, end), (start, _) in zip(ranges, ranges[1:]):
            if start < end:  # updated in parallel chunks: any overlap would race
                raise ValueError("parameters, gradients and optimizer state must not overlap")
        return table, checked[0][0].reshape(-1)

    def sgd_step_many(
        self, params, grads, velocities=None, *, lr, momentum=0.0, weight_decay=0.0, nesterov=False
    ):
        """sgd_step for each (param, grad, velocity) of the lists, in one parallel kernel call
        (velocities may be None without momentum): the same results as sgd_step on each."""
        many = self._sgd_groups(params, grads, velocities, lr, momentum, weight_decay, nesterov)
        if many is None:
            return
        groups, check_group, lr, momentum, weight_decay = many
        table, first = self._update_table("sgd", groups, check_group)
        _optim.sgd_step_many(table, first, lr, momentum, weight_decay, bool(nesterov))

    def adam_step_many(
        self, params, grads, ms, vs, *, lr, step, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0
    ):
        """adam_step for each (param, grad, m, v) of the lists, in one parallel kernel call."""
        many = self._adam_groups(params, grads, ms, vs, lr, step, beta1, beta2, eps, weight_decay)
        if many is None:
            return
        groups, check_group, lr, step, beta1, beta2, eps, weight_decay = many
        table, first = self._update_table("adam", groups, check_group)
        _optim.adam_step_many(
            table, first, lr, beta1, beta2, 1 - beta1**step, 1 - beta2**step, eps, weight_decay
        )

    def adam_step(
        self, param, grad, m, v, *, lr, step, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0
    ):
        param, grad, lr, step, beta1, beta2, eps, weight_decay = self._adam_args(
            param, grad, m, v, lr, step, beta1, beta2, eps, weight_decay
        )
        _distinct(param=param, grad=grad, m=m, v=v)
        _optim.adam_step(
            param.reshape(-1),
            grad.reshape(-1),
            m.reshape(-1),
            v.reshape(-1),
            lr,
            beta1,
            beta2,
            1 - beta1**step,
            1 - beta2**step,
            eps,
            weight_decay,
        )
