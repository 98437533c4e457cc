"""The reference backend: the kernel contract in plain, readable NumPy.

Every other backend is tested against this one, and this one is tested by finite differences
in float64. Clarity wins over speed here.

Conventions (see DESIGN.md): Linear weight (out, in), y = x @ w.T + b. Conv2d NCHW, weight
(C_out, C_in, kH, kW). Max-pool keeps, for each output, the index of its maximum within the
(H*W) plane of its input channel; among equal values the first in row-major window order wins,
and a NaN wins over numbers (as np.argmax does).
"""

import numpy as np

from .. import validation as checks
from .base import Backend
from .numpy_layers import NumpyLayerKernels


class NumpyBackend(NumpyLayerKernels, Backend):
    """The reference. It always checks its arguments (check=False changes nothing) and takes
    out= by copying its result there (fills_out is empty: callers need not pass it)."""

    name = "numpy"
    xp = np
    optional = frozenset(Backend.OPTIONAL_KERNELS)

    # ---- linear -------------------------------------------------------------------------------

    def linear_forward(self, x, w, b, relu=False, *, check_finite=True, out=None, check=True):
        x, w, b = self._linear_args(x, w, b)
        if check_finite:
            checks.finite("x", x)
        y = x @ w.T
        if b is not None:  # a layer without bias passes None
            y += b
        if relu:
            y = np.maximum(y, 0)
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
        """Gradients of linear_forward; dx is None when need_dx is False (a model's first layer)."""
        x, w, _ = self._linear_args(x, w)
        out_shape = (x.shape[0], w.shape[0])
        y, dy, _ = self._output_gradient_args(x, y, dy, out_shape, check_finite)
        if relu:
            dy = dy * (y > 0)
        dx = dy @ w if need_dx else None
        dw = dy.T @ x
        db = dy.sum(axis=0)
        return self._grads_into(out, dx, dw, db)

    # ---- conv2d -------------------------------------------------------------------------------

    @staticmethod
    def _window(xpad, i, j, stride, ho, wo):
        """The input values that kernel tap (i, j) sees, for every output position."""
        return xpad[
            :, :, i : i + stride * (ho - 1) + 1 : stride, j : j + stride * (wo - 1) + 1 : stride
        ]

    def conv2d_forward(
        self, x, w, b, stride=1, padding=0, relu=False, *, check_finite=True, out=None, check=True
    ):
        x, w, b, stride, padding, (n, co, ho, wo) = checks.conv_args(x, w, b, stride, padding)
        if check_finite:
            checks.finite("x", x)
        xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        y = np.zeros((n, co, ho, wo), dtype=x.dtype)
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                # (n, ci, ho, wo) x (co, ci) -> (n, co, ho, wo)
                y += np.einsum(
                    "nchw,oc->nohw", self._window(xpad, i, j, stride, ho, wo), w[:, :, i, j]
                )
        if b is not None:
            y += b[None, :, None, None]
        if relu:
            y = np.maximum(y, 0)
        return self._into(out, y)

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
        """Gradients of conv2d_forward; dx is None when need_dx is False (a model's first layer)."""
        x, w, _, stride, padding, out_shape = checks.conv_args(x, w, None, stride, padding)
        y, dy, _ = self._output_gradient_args(x, y, dy, out_shape, check_finite)
        if relu:
            dy = dy * (y > 0)
        _, _, ho, wo = out_shape
        xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        dxpad = np.zeros_like(xpad)
        dw = np.zeros_like(w)
        for i in range(w.shape[2]):
            for j in range(w.shape[3]):
                window = self._window(xpad, i, j, stride, ho, wo)
                dw[:, :, i, j] = np.einsum("nohw,nchw->oc", dy, window)
                if need_dx:
                    self._window(dxpad, i, j, stride, ho, wo)[...] += np.einsum(
                        "nohw,oc->nchw", dy, w[:, :, i, j]
                    )
        h, wd = x.shape[2], x.shape[3]
        dx = (
            np.ascontiguousarray(dxpad[:, :, padding : padding + h, padding : padding + wd])
            if need_dx
            else None
        )
        db = dy.sum(axis=(0, 2, 3))
        return self._grads_into(out, dx, dw, db)

    # ---- max-pool -----------------------------------------------------------------------------

    def maxpool2d_forward(
        self, x, kernel=2, stride=None, *, check_finite=True, out=None, check=True
    ):
        x = checks.float_array("x", x, 4)
        kernel, stride, (n, c, ho, wo) = checks.pool_args(x.shape, kernel, stride)
        if check_finite:
            checks.finite("x", x)
        width = x.shape[3]
        y = np.empty((n, c, ho, wo), dtype=x.dtype)
        argmax = np.empty((n, c, ho, wo), dtype=np.int32)
        for oh in range(ho):
            for ow in range(wo):
                top, left = oh * stride, ow * stride
                window = x[:, :, top : top + kernel, left : left + kernel].reshape(
                    n, c, kernel * kernel
                )
                best = window.argmax(axis=2)  # first maximum in row-major order; NaN wins
                y[:, :, oh, ow] = np.take_along_axis(window, best[:, :, None], axis=2)[:, :, 0]
                argmax[:, :, oh, ow] = (top + best // kernel) * width + left + best % kernel
        if out is None:
            return y, argmax
        return self._into(out[0], y), self._into(out[1], argmax)

    def maxpool2d_backward(
        self, dy, argmax, x_shape, kernel=2, stride=None, *, check_finite=True, out=None, check=True
    ):
        dy, argmax, x_shape, kernel, stride, y_shape = self._maxpool_backward_args(
            dy, argmax, x_shape, kernel, stride
        )
        n, c, h, w = x_shape
        if check_finite:
            checks.finite("dy", dy)
        dx = np.zeros((n * c, h * w), dtype=dy.dtype)
        rows = np.arange(n * c)[:, None]
        # overlapping windows (stride < kernel) may send several gradients to one input
        np.add.at(dx, (rows, argmax.reshape(n * c, -1)), dy.reshape(n * c, -1))
        return self._into(out, dx.reshape(x_shape))

    # ---- loss ---------------------------------------------------------------------------------

    def softmax_cross_entropy(self, logits, labels, *, check_finite=True, out=None, check=True):
        """Mean cross-entropy of softmax(logits) and its gradient (already divided by N)."""
        logits = checks.float_array("logits", logits, 2)
        n, classes = checks.logits_size(logits)
        labels = checks.labels("labels", labels, n, classes)
        if check_finite:
            checks.finite("logits", logits)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_sum_exp = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        log_probs = shifted - log_sum_exp
        rows = np.arange(n)
        loss = -log_probs[rows, labels].mean()
        dlogits = np.exp(log_probs)
        dlogits[rows, labels] -= 1
        dlogits /= n
        return logits.dtype.type(loss), self._into(out, dlogits)

    # ---- optimizer updates (in place) ---------------------------------------------------------

    def sgd_step(
        self, param, grad, velocity=None, *, lr, momentum=0.0, weight_decay=0.0, nesterov=False
    ):
        """PyTorch's SGD: g = grad + wd*p; v = momentum*v + g; p -= lr*(g + momentum*v if
        nesterov else v). `velocity` is needed (and updated) only when momentum > 0."""
        param, grad, lr, momentum, weight_decay = self._sgd_args(
            param, grad, velocity, lr, momentum, weight_decay, nesterov
        )
        g = grad + weight_decay * param if weight_decay else grad.copy()
        if momentum:
            velocity *= momentum
            velocity += g
            g = g + momentum * velocity if nesterov else velocity
        param -= param.dtype.type(lr) * g

    def adam_step(
        self, param, grad, m, v, *, lr, step, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0
    ):
        """PyTorch's Adam (L2 weight decay added to the gradient); `step` counts from 1."""
        param, grad, lr, step, beta1, beta2, eps, weight_decay = self._adam_args(
            param, grad, m, v, lr, step, beta1, beta2, eps, weight_decay
        )
        g = grad + weight_decay * param if weight_decay else grad
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        m_hat = m / (1 - beta1**step)
        v_hat = v / (1 - beta2**step)
        param -= (lr * m_hat / (np.sqrt(v_hat) + eps)).astype(param.dtype, copy=False)


def probe():
    """None: NumPy is always available."""
    return None
