"""`Backend`: the contract every backend implements, and what it may leave to generic code.

A backend is an object with an array module (`xp`: numpy or cupy) and the kernels below. The
kernels listed in `Backend.KERNELS` each backend writes itself (a test checks that cpu and cuda
override every one, so nothing falls back to slow generic code unnoticed); the whole-step entry
points after them (fused conv + pool, the optimizers' *_step_many, count_correct, the row
gatherer) have generic definitions here, written on `self.xp`, that a backend overrides where it
has something faster. What a backend can do is declared as data (`dtypes`, `fills_out`,
`fuses_conv2d_maxpool`, `runs_dense_chain`, `optional`), asked once by the code that plans a
model's run. The optional kernels (`Backend.OPTIONAL_KERNELS`: label-smoothed cross-entropy,
the affine batch gather) exist where `optional` names them; elsewhere they raise a ValueError
saying which backends have them.

Keyword arguments every kernel takes:
- check_finite: scan the input (or incoming gradient) for NaN/infinity; callers that checked
  their data once pass False.
- out: arrays to write the results into (shaped like the return value). Kernels not named in
  the backend's `fills_out` copy their result there, so callers pass out= only to those named.
- check: False when the caller vouches for its arrays (its own buffers: right shapes and dtypes,
  not overlapping); a backend may then skip its argument checks and call its kernels directly.
  A backend that cannot tell cheaply whether an array is safe for its kernels checks anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np

from .. import validation as checks

Array = Any  # an array of the backend's module: numpy.ndarray or cupy.ndarray
Grads = tuple[Optional[Array], Array, Array]  # (dx or None, dw, db)


class Backend:
    """Base class of the numpy, cpu and cuda backends (see the module docstring)."""

    name: str = ""
    xp: Any = np
    # the float dtypes the kernels compute in
    dtypes: tuple[np.dtype, ...] = checks.FLOAT_DTYPES
    # the kernels that write into out= arrays themselves (the others compute and copy, so
    # callers pass out= only to these)
    fills_out: frozenset[str] = frozenset()
    # conv2d_maxpool_forward/backward run one fused kernel where conv2d_maxpool_fusable says so
    fuses_conv2d_maxpool: bool = False
    # dense_chain_forward runs an MLP's whole inference in one call
    runs_dense_chain: bool = False
    # the optional kernels (OPTIONAL_KERNELS) this backend has
    optional: frozenset[str] = frozenset()

    # the kernels each backend implements itself
    KERNELS = (
        "linear_forward",
        "linear_backward",
        "conv2d_forward",
        "conv2d_backward",
        "maxpool2d_forward",
        "maxpool2d_backward",
        "softmax_cross_entropy",
        "sgd_step",
        "adam_step",
        "batchnorm_forward",
        "batchnorm_backward",
        "avgpool2d_forward",
        "avgpool2d_backward",
        "global_avgpool2d_forward",
        "global_avgpool2d_backward",
        "leaky_relu_forward",
        "leaky_relu_backward",
    )
    # kernels a backend may lack (see `optional`)
    OPTIONAL_KERNELS = ("smoothed_cross_entropy", "gather_affine")

    # ---- arrays -------------------------------------------------------------------------------

    def asarray(self, a: Any, dtype: Any = None) -> Array:
        """`a` as a C-contiguous array of this backend."""
        return self.xp.ascontiguousarray(a, dtype=dtype)

    def to_numpy(self, a: Array) -> np.ndarray:
        return np.asarray(a)

    def zeros(self, shape: Sequence[int], dtype: Any = np.float32) -> Array:
        return self.xp.zeros(shape, dtype=dtype)

    def synchronize(self) -> None:
        """Wait for queued work (a no-op on the CPU)."""

    def to_float(self, x: Array) -> Array:
        """An array of this backend holding uint8 images or floats, as float32 (uint8 scaled
        to [0, 1]), as fastnn.datasets.to_float does for host data; NaN or infinity is refused
        (on a device, one sync). For data that is already on a device."""
        f32 = np.dtype(np.float32)
        if x.dtype == np.uint8:
            out = x.astype(f32)
            out /= 255.0
            return out
        if x.dtype.kind != "f":
            raise TypeError(f"x must be uint8 images or floating point, got dtype {x.dtype}")
        out = self.xp.ascontiguousarray(x, dtype=f32)
        if not bool(self.xp.isfinite(out).all()):
            raise ValueError("x holds NaN or infinite values (or values beyond float32's range)")
        return out

    @staticmethod
    def _into(out: Array | None, result: Array) -> Array:
        """`result`, copied into `out` when one is given (kernels not in fills_out)."""
        if out is None:
            return result
        out[...] = result
        return out

    @classmethod
    def _grads_into(cls, out, dx, dw, db):
        """(dx, dw, db), each copied into its out= array where one is given."""
        if out is None:
            return dx, dw, db
        dx_out, dw_out, db_out = out
        return (
            None if dx is None else cls._into(dx_out, dx),
            cls._into(dw_out, dw),
            cls._into(db_out, db),
        )

    # ---- the kernels (each backend writes these) ----------------------------------------------

    def linear_forward(
        self,
        x: Array,
        w: Array,
        b: Array | None,
        relu: bool = False,
        *,
        check_finite: bool = True,
        out: Array | None = None,
        check: bool = True,
    ) -> Array:
        """y = x @ w.T + b (b may be None), then max(y, 0) if relu. x (N, in), w (out, in)."""
        raise NotImplementedError

    def linear_backward(
        self,
        x: Array,
        w: Array,
        y: Array,
        dy: Array,
        relu: bool = False,
        *,
        check_finite: bool = True,
        need_dx: bool = True,
        out: Grads | None = None,
        work: Array | None = None,
        check: bool = True,
    ) -> Grads:
        """(dx, dw, db) of linear_forward given its output y (the ReLU mask) and dy; dx is
        None when need_dx is False. work: scratch for the masked dy, may be dy itself (then
        overwritten)."""
        raise NotImplementedError

    def conv2d_forward(
        self,
        x: Array,
        w: Array,
        b: Array | None,
        stride: int = 1,
        padding: int = 0,
        relu: bool = False,
        *,
        check_finite: bool = True,
        out: Array | None = None,
        check: bool = True,
    ) -> Array:
        """NCHW convolution: x (N, C, H, W), w (Co, C, kH, kW), zero padding, then ReLU."""
        raise NotImplementedError

    def conv2d_backward(
        self,
        x: Array,
        w: Array,
        y: Array,
        dy: Array,
        stride: int = 1,
        padding: int = 0,
        relu: bool = False,
        *,
        check_finite: bool = True,
        need_dx: bool = True,
        out: Grads | None = None,
        check: bool = True,
    ) -> Grads:
        """(dx, dw, db) of conv2d_forward; dx is None when need_dx is False."""
        raise NotImplementedError

    def maxpool2d_forward(
        self,
        x: Array,
        kernel: int = 2,
        stride: int | None = None,
        *,
        check_finite: bool = True,
        out: tuple[Array, Array] | None = None,
        check: bool = True,
    ) -> tuple[Array, Array]:
        """(y, argmax): the max of each window and its int32 index in its (H*W) input plane."""
        raise NotImplementedError

    def maxpool2d_backward(
        self,
        dy: Array,
        argmax: Array,
        x_shape: Sequence[int],
        kernel: int = 2,
        stride: int | None = None,
        *,
        check_finite: bool = True,
        out: Array | None = None,
        check: bool = True,
    ) -> Array:
        """dx of maxpool2d_forward: each dy goes to the input its argmax names."""
        raise NotImplementedError

    def softmax_cross_entropy(
        self,
        logits: Array,
        labels: Array,
        *,
        check_finite: bool = True,
        out: Array | None = None,
        check: bool = True,
    ) -> tuple[Any, Array]:
        """(mean loss, dlogits / N); out receives dlogits and may be logits itself."""
        raise NotImplementedError

    def sgd_step(
        self,
        param: Array,
        grad: Array,
        velocity: Array | None = None,
        *,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        """PyTorch's SGD, in place: g = grad + wd*p; v = momentum*v + g;
        p -= lr*(g + momentum*v if nesterov else v). velocity only with momentum > 0."""
        raise NotImplementedError

    def adam_step(
        self,
        param: Array,
        grad: Array,
        m: Array,
        v: Array,
        *,
        lr: float,
        step: int,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        """PyTorch's Adam (L2 weight decay added to the gradient), in place; step from 1."""
        raise NotImplementedError

    def batchnorm_forward(
        self,
        x: Array,
        gamma: Array,
        beta: Array,
        running_mean: Array,
        running_var: Array,
        *,
        training: bool,
        momentum: float = 0.1,
        eps: float = 1e-5,
        relu: bool = False,
        check_finite: bool = True,
        out: Array | None = None,
        check: bool = True,
    ) -> tuple[Array, Array, Array]:
        """y = (x - mean) * inv_std * gamma + beta per channel (axis 1 of (N, C) or
        (N, C, H, W)), then max(y, 0) if relu. training: the batch's statistics, and the running
        ones move towards them in place (PyTorch's momentum; running_var takes the unbiased
        variance); else the running statistics. Returns (y, mean, inv_std) for the backward."""
        raise NotImplementedError

    def batchnorm_backward(
        self,
        x: Array,
        y: Array,
        dy: Array,
        gamma: Array,
        mean: Array,
        inv_std: Array,
        *,
        relu: bool = False,
        need_dx: bool = True,
        check_finite: bool = True,
        out: Grads | None = None,
        check: bool = True,
    ) -> Grads:
        """(dx or None, dgamma, dbeta) of a training-mode batchnorm_forward."""
        raise NotImplementedError

    def avgpool2d_forward(
        self,
        x: Array,
        kernel: int = 2,
        stride: int | None = None,
        *,
        check_finite: bool = True,
        out: Array | None = None,
        check: bool = True,
    ) -> Array:
        """The mean of each kernel x kernel window (stride defaults to kernel), no padding."""
        raise NotImplementedError

    def avgpool2d_backward(
        self,
        dy: Array,
        x_shape: Sequence[int],
        kernel: int = 2,
        stride: int | None = None,
        *,
        check_finite: bool = True,
        out: Array | None = None,
        check: bool = True,
    ) -> Array:
        """dx of avgpool2d_forward: each dy shared equally by its window."""
        raise NotImplementedError

    def global_avgpool2d_forward(
        self, x: Array, *, check_finite: bool = True, out: Array | None = None, check: bool = True
    ) -> Array:
        """(N, C, H, W) -> (N, C): the mean of each plane."""
        raise NotImplementedError

    def global_avgpool2d_backward(
        self,
        dy: Array,
        x_shape: Sequence[int],
        *,
        check_finite: bool = True,
        out: Array | None = None,
        check: bool = True,
    ) -> Array:
        """dx of global_avgpool2d_forward."""
        raise NotImplementedError

    def leaky_relu_forward(
        self,
        x: Array,
        slope: float = 0.01,
        *,
        check_finite: bool = True,
        out: Array | None = None,
        check: bool = True,
    ) -> Array:
        """x where x > 0, else slope * x (any shape)."""
        raise NotImplementedError

    def leaky_relu_backward(
        self,
        x: Array,
        dy: Array,
        slope: float = 0.01,
        *,
        check_finite: bool = True,
        out: Array | None = None,
        check: bool = True,
    ) -> Array:
        """dy where x > 0, else slope * dy."""
        raise NotImplementedError

    # ---- optional kernels (where `optional` names them) -------------------------------------

    def _lacks(self, kernel: str, use: str) -> ValueError:
        return ValueError(
            f"{use} needs a backend with the {kernel} kernel (numpy, cpu); {self.name!r} has none"
        )

    def smoothed_cross_entropy(
        self,
        logits: Array,
        labels: Array,
        smoothing: float = 0.1,
        *,
        check_finite: bool = True,
        out: Array | None = None,
        check: bool = True,
    ) -> tuple[Any, Array]:
        """Mean cross-entropy of softmax(logits) against (1 - smoothing) * onehot + smoothing /
        classes, and its gradient / N."""
        raise self._lacks("smoothed_cross_entropy", "label_smoothing")

    def gather_affine(
        self, x: Array, index: Array, matrices: np.ndarray, out: Array | None = None
    ) -> Array:
        """out[b] = x[index[b]] warped by the affine map matrices[b] (the augmented batch)."""
        raise self._lacks("gather_affine", "augment")

    # ---- whole-step entry points: generic definitions -------------------------------------------

    def conv2d_maxpool_fusable(
        self,
        x_shape: Sequence[int],
        w_shape: Sequence[int],
        dtype: Any,
        stride: int = 1,
        padding: int = 0,
        pool: int = 2,
        *,
        need_dx: bool = True,
    ) -> bool:
        """Whether conv2d_maxpool_backward (need_dx=False: conv2d_maxpool_forward) runs one
        fused kernel for these arguments rather than the two kernels."""
        return False

    def conv2d_maxpool_forward(
        self,
        x: Array,
        w: Array,
        b: Array | None,
        stride: int = 1,
        padding: int = 0,
        relu: bool = False,
        pool: int = 2,
        *,
        check_finite: bool = True,
        out: tuple[Array, Array] | None = None,
        check: bool = True,
    ) -> tuple[Array, Array]:
        """maxpool2d_forward(conv2d_forward(x, w, b, stride, padding, relu), pool): (y, argmax),
        argmax indexing each plane of the convolution's output."""
        conv = self.conv2d_forward(x, w, b, stride, padding, relu, check_finite=check_finite)
        return self.maxpool2d_forward(conv, pool, check_finite=False, out=out)

    def conv2d_maxpool_backward(
        self,
        x: Array,
        w: Array,
        y: Array,
        argmax: Array,
        dy: Array,
        stride: int = 1,
        padding: int = 0,
        relu: bool = False,
        pool: int = 2,
        *,
        check_finite: bool = True,
        need_dx: bool = True,
        out: Grads | None = None,
        check: bool = True,
    ) -> Grads:
        """(dx, dw, db) of conv2d_maxpool_forward given its outputs y, argmax and dy at y."""
        xp = self.xp
        x, w, _, stride, padding, conv_shape = checks.conv_args(x, w, None, stride, padding, xp)
        pool, _, y_shape = checks.pool_args(conv_shape, pool, None)
        y, dy, _ = self._output_gradient_args(x, y, dy, y_shape, check_finite)
        argmax = checks.argmax_array(argmax, y_shape, conv_shape[2] * conv_shape[3], xp)
        return self._conv2d_maxpool_backward_unfused(
            x, w, y, argmax, dy, stride, padding, relu, pool, conv_shape, out, need_dx
        )

    def _conv2d_maxpool_backward_unfused(
        self, x, w, y, argmax, dy, stride, padding, relu, pool, conv_shape, out, need_dx
    ):
        """maxpool2d_backward then conv2d_backward on checked arguments. The ReLU mask is
        y > 0 at each window's maximum, the only place a gradient goes."""
        g = dy * (y > 0) if relu else dy
        dconv = self.maxpool2d_backward(g, argmax, conv_shape, pool, check_finite=False)
        # relu=False: the mask is applied above, so the conv output (never kept) is not read
        return self.conv2d_backward(
            x, w, dconv, dconv, stride, padding, False, check_finite=False, out=out, need_dx=need_dx
        )

    def sgd_step_many(
        self,
        params: Sequence[Array],
        grads: Sequence[Array],
        velocities: Sequence[Array | None] | None = None,
        *,
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        """sgd_step on each (param, grad, velocity) of the lists (an optimizer's whole step)."""
        groups = self._sgd_groups(params, grads, velocities, lr, momentum, weight_decay, nesterov)
        if groups is None:
            return
        for p, g, v in groups[0]:
            self.sgd_step(
                p, g, v, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
            )

    def adam_step_many(
        self,
        params: Sequence[Array],
        grads: Sequence[Array],
        ms: Sequence[Array],
        vs: Sequence[Array],
        *,
        lr: float,
        step: int,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        """adam_step on each (param, grad, m, v) of the lists."""
        groups = self._adam_groups(params, grads, ms, vs, lr, step, beta1, beta2, eps, weight_decay)
        if groups is None:
            return
        for p, g, m, v in groups[0]:
            self.adam_step(
                p,
                g,
                m,
                v,
                lr=lr,
                step=step,
                beta1=beta1,
                beta2=beta2,
                eps=eps,
                weight_decay=weight_decay,
            )

    def count_correct(self, outputs: Array, labels: Array) -> Any:
        """How many rows of `outputs` have their argmax at the label: an int on the host, a
        0-d device array (no synchronization) on a device."""
        return self.xp.count_nonzero(outputs.argmax(axis=1) == labels)

    def row_gatherer(self, x: Array, out: Array) -> Callable[[Array], Array]:
        """gather(index) -> out[:len(index)] = x[index]: the training loop's shuffled batch,
        x and out fixed for a whole fit. index holds valid row numbers (a permutation). uint8
        x with a float out: the rows scaled to [0, 1] as fastnn.datasets.to_float scales them
        (u / 255 in out's type)."""
        take = self.xp.take
        if x.dtype == np.uint8 and out.dtype.kind == "f":

            def gather_scaled(index):
                batch = out[: index.shape[0]]
                batch[...] = take(x, index, axis=0)
                batch /= 255.0
                return batch

            return gather_scaled

        def gather(index):
            return take(x, index, axis=0, out=out[: index.shape[0]])

        return gather

    def running_metrics(self) -> Any:
        """None, or (on a device) an object that keeps an epoch's running loss, accuracy and
        first non-finite step on the device: add(loss, outputs, labels, step), read() ->
        (loss sum, correct, bad step or 0), close(). Trainer.fit uses it where there is one."""
        return None

    def batch_gatherer(
        self, x: Array, y: Array, x_out: Array, y_out: Array
    ) -> Callable[[Array], tuple[Array, Array]]:
        """gather(index) -> (x_out[:k] = x[index], y_out[:k] = y[index]) for k = len(index): the
        training loop's shuffled batch of inputs and labels (two row gatherers here)."""
        gather_x, gather_y = self.row_gatherer(x, x_out), self.row_gatherer(y, y_out)

        def gather(index):
            return gather_x(index), gather_y(index)

        return gather

    def dense_chain_forward(self, x: Array, table: np.ndarray, labels: Array | None) -> None:
        """An MLP's inference in one call (see fastnn.inference); only where runs_dense_chain."""
        raise NotImplementedError(f"backend {self.name!r} has no dense chain kernel")

    # ---- the *_step_many address tables (cpu and cuda) ------------------------------------------

    def _update_table(self, kind, groups, check_group):
        """What `_address_table` builds from `groups` (param, grad, state... per parameter),
        remembered per thread (in `self._per_thread`) while the very same arrays come back (a
        layer's kept gradients), so a training step pays no per-array checks; `check_group`
        checks one group on a miss. The cache keeps the arrays alive, so the addresses stay
        valid; arrays a check had to copy are kept instead (never passed again, so never
        matched by identity)."""
        groups = tuple(tuple(g) for g in groups)
        tables = getattr(self._per_thread, "tables", None)
        if tables is None:
            tables = self._per_thread.tables = {}
        cached = tables.get(kind)
        if (
            cached is not None
            and len(cached[0]) == len(groups)
            and all(a is b for old, new in zip(cached[0], groups) for a, b in zip(old, new))
        ):
            return cached[1]
        checked = tuple(tuple(check_group(*g)) for g in groups)
        built = self._address_table(checked)
        copied = any(a is not b for old, new in zip(groups, checked) for a, b in zip(old, new))
        tables[kind] = (checked if copied else groups, built)
        return built

    # ---- argument checks shared by the kernels --------------------------------------------------

    def _float_array(self, name, a, ndim):
        """A float array argument of `ndim` dimensions (a backend may narrow the dtypes)."""
        return checks.float_array(name, a, ndim, self.xp)

    def _finite(self, name, a):
        """Refuse NaN or infinity in `a` (a backend may scan faster)."""
        checks.finite(name, a, self.xp)

    def _output_gradient_args(self, x, y, dy, y_shape, check_finite):
        """A backward kernel's y (the forward output) and dy checked against the output shape
        and x's dtype, dy scanned for NaN/infinity when check_finite: (y, dy, dtype)."""
        y = self._float_array("y", y, len(y_shape))
        dy = self._float_array("dy", dy, len(y_shape))
        dtype = checks.same_dtype(x=x, y=y, dy=dy)
        checks.expect_shape("y", y, y_shape)
        checks.expect_shape("dy", dy, y_shape)
        if check_finite:
            self._finite("dy", dy)
        return y, dy, dtype

    def _linear_args(self, x, w, b=None):
        x = self._float_array("x", x, 2)
        w = self._float_array("w", w, 2)
        b = None if b is None else self._float_array("b", b, 1)
        checks.same_dtype(x=x, w=w, b=b)
        if x.shape[1] != w.shape[1]:
            raise ValueError(
                f"x has {x.shape[1]} features but w has shape {tuple(w.shape)} "
                f"(expected (out_features, {x.shape[1]}))"
            )
        if b is not None:
            checks.expect_shape("b", b, (w.shape[0],))
        return x, w, b

    def _maxpool_backward_args(self, dy, argmax, x_shape, kernel, stride):
        """(dy, argmax as int32, x_shape, kernel, stride, y_shape), all checked."""
        dy = self._float_array("dy", dy, 4)
        x_shape = checks.shape_tuple("x_shape", x_shape)
        kernel, stride, y_shape = checks.pool_args(x_shape, kernel, stride)
        checks.expect_shape("dy", dy, y_shape)
        argmax = checks.argmax_array(argmax, y_shape, x_shape[2] * x_shape[3], self.xp)
        return dy, argmax, x_shape, kernel, stride, y_shape

    def _step_args(self, param, grad, **state):
        xp = self.xp
        param = checks.writable_float("param", param, xp)
        grad = checks.float_array("grad", grad, param.ndim, xp)
        checks.expect_shape("grad", grad, param.shape)
        checks.same_dtype(param=param, grad=grad)
        for name, a in state.items():
            if a is not None:
                checks.writable_array(name, a, param.shape, param.dtype, xp)
        return param, grad

    @staticmethod
    def _sgd_hyper(lr, momentum, weight_decay, nesterov):
        lr = checks.real("lr", lr, minimum=0.0, min_inclusive=False)
        momentum = checks.real("momentum", momentum, minimum=0.0, below=1.0)
        weight_decay = checks.real("weight_decay", weight_decay, minimum=0.0)
        if nesterov and momentum == 0:
            raise ValueError("nesterov needs momentum > 0")
        return lr, momentum, weight_decay

    def _sgd_group(self, param, grad, velocity, momentum):
        """One parameter's arrays of an SGD step checked: (param, grad)."""
        if momentum and velocity is None:
            raise ValueError("velocity is required when momentum > 0")
        return self._step_args(param, grad, velocity=velocity if momentum else None)

    def _sgd_args(self, param, grad, velocity, lr, momentum, weight_decay, nesterov):
        lr, momentum, weight_decay = self._sgd_hyper(lr, momentum, weight_decay, nesterov)
        param, grad = self._sgd_group(param, grad, velocity, momentum)
        return param, grad, lr, momentum, weight_decay

    @staticmethod
    def _adam_hyper(lr, step, beta1, beta2, eps, weight_decay):
        lr = checks.real("lr", lr, minimum=0.0, min_inclusive=False)
        step = checks.integer("step", step, 1)
        beta1 = checks.real("beta1", beta1, minimum=0.0, below=1.0)
        beta2 = checks.real("beta2", beta2, minimum=0.0, below=1.0)
        eps = checks.real("eps", eps, minimum=0.0, min_inclusive=False)
        weight_decay = checks.real("weight_decay", weight_decay, minimum=0.0)
        return lr, step, beta1, beta2, eps, weight_decay

    def _sgd_groups(self, params, grads, velocities, lr, momentum, weight_decay, nesterov):
        """sgd_step_many's arguments checked once: None for empty lists, else ((param, grad,
        velocity) groups, a check of one group, lr, momentum, weight_decay)."""
        if velocities is None:
            velocities = [None] * len(params)
        if not len(params) == len(grads) == len(velocities):
            raise ValueError("params, grads and velocities must be lists of the same length")
        if not params:
            return None
        lr, momentum, weight_decay = self._sgd_hyper(lr, momentum, weight_decay, nesterov)
        if not momentum:
            velocities = [None] * len(params)

        def check_group(p, g, v):
            return (*self._sgd_group(p, g, v, momentum), v)

        return zip(params, grads, velocities), check_group, lr, momentum, weight_decay

    def _adam_groups(self, params, grads, ms, vs, lr, step, beta1, beta2, eps, weight_decay):
        """adam_step_many's arguments checked once: None for empty lists, else ((param, grad,
        m, v) groups, a check of one group, lr, step, beta1, beta2, eps, weight_decay)."""
        if not len(params) == len(grads) == len(ms) == len(vs):
            raise ValueError("params, grads, ms and vs must be lists of the same length")
        if not params:
            return None
        hyper = self._adam_hyper(lr, step, beta1, beta2, eps, weight_decay)

        def check_group(p, g, m, v):
            return (*self._adam_group(p, g, m, v), m, v)

        return (zip(params, grads, ms, vs), check_group, *hyper)

    @staticmethod
    def _update_running_stats(running_mean, running_var, mean, var, momentum, count):
        """Batch norm's running statistics, in place, as PyTorch's: each moves `momentum` of
        the way to the batch's mean and unbiased variance (`count` values per channel)."""
        running_mean *= 1.0 - momentum
        running_mean += momentum * mean
        running_var *= 1.0 - momentum
        running_var += momentum * var * (count / (count - 1))

    def _adam_group(self, param, grad, m, v):
        """One parameter's arrays of an Adam step checked: (param, grad)."""
        if m is None or v is None:
            raise TypeError("m and v (Adam's moment estimates) must be arrays, got None")
        return self._step_args(param, grad, m=m, v=v)

    def _adam_args(self, param, grad, m, v, lr, step, beta1, beta2, eps, weight_decay):
        lr, step, beta1, beta2, eps, weight_decay = self._adam_hyper(
            lr, step, beta1, beta2, eps, weight_decay
        )
        param, grad = self._adam_group(param, grad, m, v)
        return param, grad, lr, step, beta1, beta2, eps, weight_decay
