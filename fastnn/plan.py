"""The compiled plan: how a Sequential's layers run on one backend.

`compile(layers, backend)` turns the user's layers into steps, asking the backend once what it
can do (`Backend.fuses_conv2d_maxpool`, `fills_out`):

- a Linear, Conv2d or BatchNorm directly followed by ReLU computes the ReLU inside its kernel
  (LinearStep(relu), ConvStep(relu), BatchNormStep(relu));
- on a backend that fuses conv + max-pool, a Conv2d also runs the MaxPool2d (stride == kernel)
  after it or its ReLU (ConvPoolStep), one kernel where the backend says the shapes fuse;
- evaluation has steps of its own where a BatchNorm follows a Linear or Conv2d (without a ReLU
  between them): the batch norm is a fixed per-channel x * scale + shift there, so it is folded
  into that layer's weights (the step's `fold`), and the ReLU after the batch norm (and on a
  fusing backend the max-pool after that) runs in the same kernel. Elsewhere evaluation runs
  the training steps.

A step owns what running needs: its buffers, whether it computes the gradient of its input
(`need_dx`: not for the first step with parameters), the activations kept for backward. The
layers keep only their configuration and parameters, so one layer object can be planned for any
backend.

Every kernel is called one way: `backend.kernel(..., out=buffer, check=False)` for a training
pass into the step's own buffers (kept where the backend's kernel fills out= arrays itself:
`Backend.fills_out`), `out=None, check=True` otherwise; the backend routes trusted calls to its
unchecked kernels. Evaluation passes allocate their outputs and write nothing on the steps but
memos of values that do not change (fusion decisions, output shapes), so threads may evaluate
one model at once.

Adding a layer: the layer (configuration, parameters, shapes), its kernels in each backend, and
a step class here registered in STEPS (the plan rule), which may look at the layers after it to
fuse them.
"""

import numpy as np

from . import _random
from . import extra_layers as XL
from . import layers as L


class Step:
    """One entry of the plan: runs `layers[0]` (and the layers fused into it) forward and
    backward. `need_dx` is False for the first step with parameters; steps before it run no
    backward pass at all."""

    def __init__(self, layers, backend):
        self.layers = tuple(layers)
        self.layer = self.layers[0]
        self.backend = backend
        self.need_dx = True
        self.reuse = self.reuse_forward = self.reuse_backward = False
        self._buffers = {}
        self._shape_memo = {}

    @classmethod
    def build(cls, layers, i, backend, evaluation=False):
        """(step for layers[i] and any it fuses, index of the next layer to plan); evaluation:
        a step that only ever runs forward with training=False (it may fold)."""
        return cls([layers[i]], backend), i + 1

    @property
    def name(self):
        return "+".join(repr(layer) for layer in self.layers)

    def output_shape(self, shape):
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    def set_reuse(self, flag):
        """Keep training outputs and gradients in arrays reused between steps (a fit's
        arrays are dead once the optimizer has run); off frees them."""
        self.reuse = self.reuse_forward = self.reuse_backward = bool(flag)
        self._buffers = {}

    def _batch_shape(self, layer, x_shape):
        """(N, *layer.output_shape) for a batch of x_shape, remembered per layer."""
        memo = self._shape_memo.get(id(layer))
        if memo is None or memo[0] != x_shape:
            memo = self._shape_memo[id(layer)] = (
                x_shape,
                (x_shape[0], *layer.output_shape(x_shape[1:])),
            )
        return memo[1]

    def _scratch(self, key, shape, dtype):
        """A kept array of `shape`: the head rows of a larger one for a smaller last batch."""
        buf = self._buffers.get(key)
        if (
            buf is None
            or buf.shape[0] < shape[0]
            or buf.shape[1:] != shape[1:]
            or buf.dtype != dtype
        ):
            buf = self._buffers[key] = self.backend.xp.empty(shape, dtype)
        return buf if buf.shape[0] == shape[0] else buf[: shape[0]]

    def _forward_out(self, training, shape, dtype):
        """The kept output buffer of a training pass, or None (a new array)."""
        return self._scratch("y", shape, dtype) if training and self.reuse_forward else None

    def _backward_out(self, shape, dtype):
        """The kept input-gradient buffer of a backward pass, or None (a new array)."""
        return self._scratch("dx", shape, dtype) if self.reuse_backward else None

    def forward(self, x, training):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError


class _KernelStep(Step):
    """A step that runs a FORWARD and a BACKWARD kernel, into its kept buffers where the
    backend's kernel fills out= arrays itself (Backend.fills_out; elsewhere into new arrays)."""

    FORWARD = BACKWARD = ""

    def set_reuse(self, flag):
        super().set_reuse(flag)
        self.reuse_forward = self.reuse and self.FORWARD in self.backend.fills_out
        self.reuse_backward = self.reuse and self.BACKWARD in self.backend.fills_out


def _fused_relu(layers, i):
    """Whether layers[i + 1] is a ReLU the kernel of layers[i] computes."""
    return i + 1 < len(layers) and type(layers[i + 1]) is L.ReLU


def _folded_batchnorm(layers, i, evaluation):
    """Whether an evaluation step for layers[i] (a Linear or Conv2d) folds the BatchNorm right
    after it (no ReLU between them)."""
    return evaluation and i + 1 < len(layers) and isinstance(layers[i + 1], XL._BatchNorm)


class _ParametricStep(_KernelStep):
    """A Linear or Conv2d, with the ReLU after it fused into its kernel; in evaluation also the
    BatchNorm after it (`fold`), folded into its weights, and that BatchNorm's ReLU."""

    def __init__(self, layers, backend, relu=False, fold=None):
        super().__init__(layers, backend)
        self.relu = relu
        self.fold = fold

    @classmethod
    def _parts(cls, layers, i, evaluation):
        """(relu, batch norm folded or None, index after them)."""
        fold = layers[i + 1] if _folded_batchnorm(layers, i, evaluation) else None
        j = i + 1 + (fold is not None)
        relu = _fused_relu(layers, j - 1)
        return relu, fold, j + relu

    @classmethod
    def build(cls, layers, i, backend, evaluation=False):
        relu, fold, after = cls._parts(layers, i, evaluation)
        return cls(layers[i:after], backend, relu, fold), after

    @property
    def name(self):
        folded = f"+{self.fold!r}" if self.fold is not None else ""
        return repr(self.layer) + folded + ("+ReLU" if self.relu else "")

    def _weights(self):
        """(weight, bias) the kernel runs: the layer's, or with the batch norm folded in
        (computed afresh from the live parameters and running statistics at every call, in
        float64, then in the layer's dtype)."""
        if self.fold is None:
            return self.layer.params
        b = self.backend
        w0, b0 = self.layer.params
        scale, shift = self.fold.fold_factors()
        w = np.asarray(b.to_numpy(w0), np.float64)
        bias = np.asarray(b.to_numpy(b0), np.float64)
        w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
        return (b.asarray(w.astype(w0.dtype)), b.asarray((bias * scale + shift).astype(w0.dtype)))

    def _grad_buffers(self, x, w):
        """out=(dx or None, dw, db) for a backward pass, or None when not reusing."""
        if not self.reuse_backward:
            return None
        return (
            self._scratch("dx", x.shape, x.dtype) if self.need_dx else None,
            self._scratch("dw", w.shape, w.dtype),
            self._scratch("db", (w.shape[0],), w.dtype),
        )

    def _set_grads(self, dw, db):
        grads = self.layer.grads
        grads[0], grads[1] = dw, db


class LinearStep(_ParametricStep):
    """Linear, with the ReLU after it fused in."""

    FORWARD, BACKWARD = "linear_forward", "linear_backward"

    def forward(self, x, training):
        w, b = self._weights()
        out = self._forward_out(training, (x.shape[0], w.shape[0]), x.dtype)
        y = self.backend.linear_forward(
            x, w, b, self.relu, check_finite=False, out=out, check=out is None
        )
        if training:
            self._x, self._y = x, y
        return y

    def backward(self, dy):
        x, w = self._x, self.layer.params[0]
        out = self._grad_buffers(x, w)
        # with kept buffers dy is a buffer of the step after this one: the ReLU mask may be
        # applied to it in place
        dx, dw, db = self.backend.linear_backward(
            x,
            w,
            self._y,
            dy,
            self.relu,
            check_finite=False,
            need_dx=self.need_dx,
            out=out,
            work=dy if out is not None and self.relu else None,
            check=out is None,
        )
        self._set_grads(dw, db)
        self._x = self._y = None
        return dx


class ConvStep(_ParametricStep):
    """Conv2d, with the ReLU after it fused in (and the max-pool after that, where the backend
    fuses them: ConvPoolStep)."""

    FORWARD, BACKWARD = "conv2d_forward", "conv2d_backward"

    @classmethod
    def build(cls, layers, i, backend, evaluation=False):
        relu, fold, j = cls._parts(layers, i, evaluation)
        pool = layers[j] if j < len(layers) else None
        if (
            backend.fuses_conv2d_maxpool
            and type(pool) is L.MaxPool2d
            and pool.stride == pool.kernel_size
        ):
            return ConvPoolStep(layers[i : j + 1], backend, relu, fold), j + 1
        return cls(layers[i:j], backend, relu, fold), j

    def forward(self, x, training):
        conv = self.layer
        w, b = self._weights()
        out = self._forward_out(training, self._batch_shape(conv, x.shape), x.dtype)
        y = self.backend.conv2d_forward(
            x,
            w,
            b,
            conv.stride,
            conv.padding,
            self.relu,
            check_finite=False,
            out=out,
            check=out is None,
        )
        if training:
            self._x, self._y = x, y
        return y

    def backward(self, dy):
        conv = self.layer
        x, w = self._x, conv.params[0]
        out = self._grad_buffers(x, w)
        dx, dw, db = self.backend.conv2d_backward(
            x,
            w,
            self._y,
            dy,
            conv.stride,
            conv.padding,
            self.relu,
            check_finite=False,
            need_dx=self.need_dx,
            out=out,
            check=out is None,
        )
        self._set_grads(dw, db)
        self._x = self._y = None
        return dx


class MaxPoolStep(_KernelStep):
    FORWARD, BACKWARD = "maxpool2d_forward", "maxpool2d_backward"

    def forward(self, x, training):
        pool = self.layer
        out = None
        if training and self.reuse_forward:
            shape = self._batch_shape(pool, x.shape)
            out = (self._scratch("y", shape, x.dtype), self._scratch("argmax", shape, np.int32))
        y, argmax = self.backend.maxpool2d_forward(
            x, pool.kernel_size, pool.stride, check_finite=False, out=out, check=out is None
        )
        if training:
            self._argmax, self._x_shape = argmax, x.shape
        return y

    def backward(self, dy):
        pool = self.layer
        out = self._backward_out(self._x_shape, dy.dtype)
        dx = self.backend.maxpool2d_backward(
            dy,
            self._argmax,
            self._x_shape,
            pool.kernel_size,
            pool.stride,
            check_finite=False,
            out=out,
            check=out is None,
        )
        self._argmax = None
        return dx


class ConvPoolStep(_ParametricStep):
    """Conv2d (+ ReLU) + MaxPool2d(stride == kernel) on a backend that fuses them: one kernel
    where the backend says these shapes fuse (asked once per input shape), else the two kernels
    in turn, exactly as when the layers run one by one."""

    FORWARD, BACKWARD = "conv2d_maxpool_forward", "conv2d_maxpool_backward"

    def __init__(self, layers, backend, relu, fold=None):
        super().__init__(layers, backend, relu, fold)
        self.pool = layers[-1]
        self._conv_step = ConvStep(layers[:-1], backend, relu, fold)
        self._pool_step = MaxPoolStep(layers[-1:], backend)
        self._fuse_memo = {}
        self._fused_step = False

    @property
    def name(self):
        return super().name + "+" + repr(self.pool)

    def set_reuse(self, flag):
        super().set_reuse(flag)
        self._conv_step.set_reuse(flag)
        self._pool_step.set_reuse(flag)

    def _fuses(self, x_shape, training):
        """Whether the fused kernels take this batch (and, training, the backward pass too)."""
        key = (x_shape, training, self.need_dx)
        fuses = self._fuse_memo.get(key)
        if fuses is None:
            conv, w = self.layer, self.layer.params[0]
            fuses = self._fuse_memo[key] = self.backend.conv2d_maxpool_fusable(
                x_shape,
                w.shape,
                w.dtype,
                conv.stride,
                conv.padding,
                self.pool.kernel_size,
                need_dx=self.need_dx and training,
            )
        return fuses

    def forward(self, x, training):
        fused = self._fuses(x.shape, training)
        if training:
            self._fused_step = fused
        if not fused:
            self._conv_step.need_dx = self.need_dx
            return self._pool_step.forward(self._conv_step.forward(x, training), training)
        conv = self.layer
        w, b = self._weights()
        out = None
        if training and self.reuse_forward:
            shape = self._batch_shape(self.pool, self._batch_shape(conv, x.shape))
            out = (
                self._scratch("pooled", shape, x.dtype),
                self._scratch("argmax", shape, np.int32),
            )
        y, argmax = self.backend.conv2d_maxpool_forward(
            x,
            w,
            b,
            conv.stride,
            conv.padding,
            self.relu,
            self.pool.kernel_size,
            check_finite=False,
            out=out,
            check=out is None,
        )
        if training:
            self._x, self._y, self._argmax = x, y, argmax
        return y

    def backward(self, dy):
        if not self._fused_step:
            return self._conv_step.backward(self._pool_step.backward(dy))
        conv = self.layer
        x, w = self._x, conv.params[0]
        out = self._grad_buffers(x, w)
        dx, dw, db = self.backend.conv2d_maxpool_backward(
            x,
            w,
            self._y,
            self._argmax,
            dy,
            conv.stride,
            conv.padding,
            self.relu,
            self.pool.kernel_size,
            check_finite=False,
            need_dx=self.need_dx,
            out=out,
            check=out is None,
        )
        self._set_grads(dw, db)
        self._x = self._y = self._argmax = None
        return dx


class BatchNormStep(_KernelStep):
    """BatchNorm1d/2d with the ReLU after it fused in: the batch's statistics while training
    (the running ones move), the running statistics in evaluation."""

    FORWARD, BACKWARD = "batchnorm_forward", "batchnorm_backward"

    def __init__(self, layers, backend, relu=False):
        super().__init__(layers, backend)
        self.relu = relu
        self._constants = None  # (ones, zeros) standing in for weight and bias when not affine

    @classmethod
    def build(cls, layers, i, backend, evaluation=False):
        relu = _fused_relu(layers, i)
        return cls(layers[i : i + 1 + relu], backend, relu), i + 1 + relu

    @property
    def name(self):
        return repr(self.layer) + ("+ReLU" if self.relu else "")

    def _scale_params(self, dtype):
        """(weight, bias), or ones and zeros when the layer is not affine."""
        bn = self.layer
        if bn.affine:
            return bn.params[0], bn.params[1]
        constants = self._constants
        if constants is None or constants[0].dtype != dtype:
            b = self.backend
            constants = self._constants = (
                b.asarray(np.ones(bn.num_features, dtype)),
                b.asarray(np.zeros(bn.num_features, dtype)),
            )
        return constants

    def forward(self, x, training):
        bn = self.layer
        if not bn.buffers:  # a batch norm used on its own initializes itself on first use
            bn.initialize(
                dtype=x.dtype if x.dtype in L.FLOAT_DTYPES else np.float32, backend=self.backend
            )
        weight, bias = self._scale_params(x.dtype)
        out = self._forward_out(training, x.shape, x.dtype)
        y, mean, inv_std = self.backend.batchnorm_forward(
            x,
            weight,
            bias,
            bn.buffers[0],
            bn.buffers[1],
            training=training,
            momentum=bn.momentum,
            eps=bn.eps,
            relu=self.relu,
            check_finite=False,
            out=out,
            check=out is None,
        )
        if training:
            self._saved = (x, y, mean, inv_std)
        return y

    def backward(self, dy):
        x, y, mean, inv_std = self._saved
        self._saved = None
        weight, _ = self._scale_params(x.dtype)
        dx, dgamma, dbeta = self.backend.batchnorm_backward(
            x,
            y,
            dy,
            weight,
            mean,
            inv_std,
            relu=self.relu,
            need_dx=self.need_dx,
            check_finite=False,
        )
        if self.layer.affine:
            grads = self.layer.grads
            grads[0], grads[1] = dgamma, dbeta
        return dx


class AvgPoolStep(_KernelStep):
    FORWARD, BACKWARD = "avgpool2d_forward", "avgpool2d_backward"

    def forward(self, x, training):
        pool = self.layer
        out = self._forward_out(training, self._batch_shape(pool, x.shape), x.dtype)
        y = self.backend.avgpool2d_forward(
            x, pool.kernel_size, pool.stride, check_finite=False, out=out, check=out is None
        )
        if training:
            self._x_shape = x.shape
        return y

    def backward(self, dy):
        pool = self.layer
        out = self._backward_out(self._x_shape, dy.dtype)
        return self.backend.avgpool2d_backward(
            dy,
            self._x_shape,
            pool.kernel_size,
            pool.stride,
            check_finite=False,
            out=out,
            check=out is None,
        )


class GlobalAvgPoolStep(_KernelStep):
    FORWARD, BACKWARD = "global_avgpool2d_forward", "global_avgpool2d_backward"

    def forward(self, x, training):
        out = self._forward_out(training, x.shape[:2], x.dtype)
        y = self.backend.global_avgpool2d_forward(x, check_finite=False, out=out, check=out is None)
        if training:
            self._x_shape = x.shape
        return y

    def backward(self, dy):
        out = self._backward_out(self._x_shape, dy.dtype)
        return self.backend.global_avgpool2d_backward(
            dy, self._x_shape, check_finite=False, out=out, check=out is None
        )


class LeakyReLUStep(_KernelStep):
    FORWARD, BACKWARD = "leaky_relu_forward", "leaky_relu_backward"

    def forward(self, x, training):
        out = self._forward_out(training, x.shape, x.dtype)
        y = self.backend.leaky_relu_forward(
            x, self.layer.negative_slope, check_finite=False, out=out, check=out is None
        )
        if training:
            self._x = x
        return y

    def backward(self, dy):
        x, self._x = self._x, None
        out = self._backward_out(x.shape, dy.dtype)
        return self.backend.leaky_relu_backward(
            x, dy, self.layer.negative_slope, check_finite=False, out=out, check=out is None
        )


class FlattenStep(Step):
    def forward(self, x, training):
        if training:
            self._x_shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self._x_shape)


class ReLUStep(Step):
    """A ReLU that no kernel before it computes."""

    def forward(self, x, training):
        xp = self.backend.xp
        if training:
            self._y = y = xp.maximum(x, 0, out=self._forward_out(True, x.shape, x.dtype))
            return y
        return xp.maximum(x, 0)

    def backward(self, dy):
        dx = self.backend.xp.multiply(dy, self._y > 0, out=self._backward_out(dy.shape, dy.dtype))
        self._y = None
        return dx


class SigmoidStep(Step):
    """(1 + tanh(x/2)) / 2, which cannot overflow."""

    def forward(self, x, training):
        xp = self.backend.xp
        y = xp.multiply(x, x.dtype.type(0.5), out=self._forward_out(training, x.shape, x.dtype))
        xp.tanh(y, out=y)
        y += 1
        y *= 0.5
        if training:
            self._y = y
        return y

    def backward(self, dy):
        y = self._y
        self._y = None
        dx = self.backend.xp.subtract(1, y, out=self._backward_out(y.shape, y.dtype))
        dx *= y
        dx *= dy
        return dx


class TanhStep(Step):
    def forward(self, x, training):
        xp = self.backend.xp
        if training:
            self._y = y = xp.tanh(x, out=self._forward_out(True, x.shape, x.dtype))
            return y
        return xp.tanh(x)

    def backward(self, dy):
        xp = self.backend.xp
        y = self._y
        self._y = None
        dx = xp.multiply(y, y, out=self._backward_out(y.shape, y.dtype))
        xp.subtract(1, dx, out=dx)
        dx *= dy
        return dx


class DropoutStep(Step):
    def forward(self, x, training):
        if not training:  # inference writes nothing on the step (threads may share it)
            return x
        p = self.layer.p
        if p == 0.0:
            self._scale = None
            return x
        keep = _random.uniform(self.backend.xp, x.shape, x.dtype) >= p
        self._scale = keep * x.dtype.type(1.0 / (1.0 - p))
        return x * self._scale

    def backward(self, dy):
        scale = self._scale
        self._scale = None
        return dy if scale is None else dy * scale


class OwnForwardStep(Step):
    """A layer that computes itself: a user's Layer subclass with its own forward (and
    backward) methods."""

    def forward(self, x, training):
        return self.layer.forward(x, training)

    def backward(self, dy):
        return self.layer.backward(dy)


# The plan rules: the step class that runs each layer type (and decides what it fuses).
STEPS = {
    L.Linear: LinearStep,
    L.Conv2d: ConvStep,
    L.MaxPool2d: MaxPoolStep,
    L.Flatten: FlattenStep,
    L.ReLU: ReLUStep,
    L.Sigmoid: SigmoidStep,
    L.Tanh: TanhStep,
    L.Dropout: DropoutStep,
    XL._BatchNorm: BatchNormStep,
    XL.AvgPool2d: AvgPoolStep,
    XL.GlobalAvgPool2d: GlobalAvgPoolStep,
    XL.LeakyReLU: LeakyReLUStep,
}


def step_class(layer):
    """The step that runs `layer`: its own forward where its class defines one, else the rule
    for the nearest class in STEPS."""
    if type(layer).forward is not L.Layer.forward:
        return OwnForwardStep
    for cls in type(layer).__mro__:
        if cls in STEPS:
            return STEPS[cls]
    raise TypeError(
        f"no plan rule runs {type(layer).__name__} layers: give it forward() and backward() methods"
    )


def _build(layers, backend, evaluation):
    """(steps, indices of the layers run inside the step of a layer before them)."""
    steps, fused = [], set()
    i = 0
    while i < len(layers):
        step, after = step_class(layers[i]).build(layers, i, backend, evaluation)
        fused.update(range(i + 1, after))
        steps.append(step)
        i = after
    return steps, fused


class Plan:
    """The steps of `layers` on `backend`, in order: `steps` for training (and evaluation
    where nothing folds), `eval_steps` for evaluation."""

    def __init__(self, layers, backend):
        self.backend = backend
        # fused: indices of layers run inside the step of a layer before them
        self.steps, self.fused = _build(layers, backend, evaluation=False)
        eval_steps, _ = _build(layers, backend, evaluation=True)
        folds = any(
            isinstance(step, _ParametricStep) and step.fold is not None for step in eval_steps
        )
        # where no batch norm folds, evaluation runs the training steps (it writes nothing on
        # them)
        self.eval_steps = eval_steps if folds else self.steps
        first = next(
            (k for k, step in enumerate(self.steps) if step.layer.param_names), len(self.steps)
        )
        for k, step in enumerate(self.steps):
            step.need_dx = k > first
        for step in eval_steps:
            step.need_dx = False
        # steps before the first with parameters need no backward pass at all
        self.backward_steps = self.steps[first:][::-1]
        self.reuse = False

    def set_reuse(self, flag):
        if self.reuse != bool(flag):
            self.reuse = bool(flag)
            for step in self.steps:
                step.set_reuse(flag)

    def forward(self, x, training):
        for step in self.steps if training else self.eval_steps:
            x = step.forward(x, training)
        return x

    def backward(self, dy):
        for step in self.backward_steps:
            dy = step.backward(dy)
        return dy

    def linear_chain(self):
        """[(Linear layer, relu)] when the plan is leading Flattens and Linear steps only (an
        MLP that one dense-chain kernel can run), else None."""
        chain = []
        for step in self.steps:
            if isinstance(step, LinearStep):
                chain.append((step.layer, step.relu))
            elif not (isinstance(step, FlattenStep) and not chain):
                return None
        return chain or None


def compile(layers, backend):  # noqa: A001 -- the plan's verb
    return Plan(layers, backend)


def _one_layer_step(layer, backend):
    """The step that runs `layer` on its own (Layer.forward)."""
    return step_class(layer)([layer], backend)


L.Layer._alone = staticmethod(_one_layer_step)
