"""Reference kernels of the normalization, pooling, activation, loss and augmentation layers
added after the first kernel contract: batch normalization, average and global average
pooling, leaky ReLU, label-smoothed cross-entropy and the affine batch gather.

Plain, readable NumPy, the oracle for the compiled kernels (fastnn/backends/cpu_layers.py),
itself checked by finite differences in float64 (tests/backends/test_layer_kernels.py).
Mixed into NumpyBackend; cpu and cuda write their own with the same meaning (the contract:
fastnn/backends/base.py). Every kernel takes out= and check= as the contract says; the
reference computes a new array and copies it into out= when one is given.

Batch statistics, the running statistics and `mean` / `inv_std` handed from the forward to the
backward pass are float64 arrays of shape (C,) on every backend, whatever the data's dtype:
they are small, and float64 keeps the variance of float32 data accurate.
"""

import numpy as np

from .. import validation as checks
from ..validation import affine_matrices, bn_args, bn_hyper, running_stats, saved_stats


def _bn_layout(x):
    """x (N, C) or (N, C, H, W) as (N, C, S) and the axes the statistics reduce over."""
    if x.ndim == 2:
        return x.reshape(x.shape[0], x.shape[1], 1)
    return x.reshape(x.shape[0], x.shape[1], -1)


class NumpyLayerKernels:
    """Reference kernels; see the module docstring."""

    # ---- batch normalization ------------------------------------------------------------------

    def batchnorm_forward(
        self,
        x,
        gamma,
        beta,
        running_mean,
        running_var,
        *,
        training,
        momentum=0.1,
        eps=1e-5,
        relu=False,
        check_finite=True,
        out=None,
        check=True,
    ):
        """y = (x - mean) * inv_std * gamma + beta per channel (axis 1), then max(y, 0) when
        relu. training: mean and biased variance of this batch (over N, H, W), and the running
        statistics move towards them in place, as PyTorch's (running_var takes the unbiased
        variance); otherwise the running statistics are used. Returns (y, mean, inv_std), the
        last two float64 (C,) for batchnorm_backward."""
        x, gamma, beta = bn_args(x, gamma, beta)
        momentum, eps = bn_hyper(momentum, eps)
        channels = x.shape[1]
        running_mean, running_var = running_stats(running_mean, running_var, channels)
        if check_finite:
            checks.finite("x", x)
        x3 = _bn_layout(x)
        count = x3.shape[0] * x3.shape[2]
        if training:
            if count < 2:
                raise ValueError(
                    f"training-mode batch normalization needs more than one value "
                    f"per channel, got x of shape {tuple(x.shape)}"
                )
            mean = x3.mean(axis=(0, 2), dtype=np.float64)
            var = ((x3 - mean[None, :, None]) ** 2).mean(axis=(0, 2), dtype=np.float64)
            self._update_running_stats(running_mean, running_var, mean, var, momentum, count)
        else:
            mean = running_mean.copy()
            var = running_var
        inv_std = 1.0 / np.sqrt(var + eps)
        y = (x3 - mean[None, :, None]) * inv_std[None, :, None] * gamma[None, :, None] + beta[
            None, :, None
        ]
        if relu:
            y = np.maximum(y, 0)
        return self._into(out, y.astype(x.dtype).reshape(x.shape)), mean, inv_std

    def batchnorm_backward(
        self,
        x,
        y,
        dy,
        gamma,
        mean,
        inv_std,
        *,
        relu=False,
        need_dx=True,
        check_finite=True,
        out=None,
        check=True,
    ):
        """Gradients of a training-mode batchnorm_forward (batch statistics, which depend on
        x): (dx or None, dgamma, dbeta). y is the forward output (its sign masks dy when
        relu); mean and inv_std are what the forward returned."""
        x, gamma, _ = bn_args(x, gamma, gamma)
        dy = checks.float_array("dy", dy, x.ndim)
        checks.expect_shape("dy", dy, x.shape)
        checks.same_dtype(x=x, dy=dy)
        if relu:
            y = checks.float_array("y", y, x.ndim)
            checks.expect_shape("y", y, x.shape)
        mean, inv_std = saved_stats(mean, inv_std, x.shape[1])
        if check_finite:
            checks.finite("dy", dy)
        x3, g = _bn_layout(x), _bn_layout(dy).astype(np.float64)
        if relu:
            g = g * (_bn_layout(y) > 0)
        count = x3.shape[0] * x3.shape[2]
        xhat = (x3 - mean[None, :, None]) * inv_std[None, :, None]
        dbeta = g.sum(axis=(0, 2))
        dgamma = (g * xhat).sum(axis=(0, 2))
        dx = None
        if need_dx:
            dx = (gamma.astype(np.float64) * inv_std)[None, :, None] * (
                g - dbeta[None, :, None] / count - xhat * dgamma[None, :, None] / count
            )
            dx = dx.astype(x.dtype).reshape(x.shape)
        return self._grads_into(out, dx, dgamma.astype(x.dtype), dbeta.astype(x.dtype))

    # ---- average pooling ----------------------------------------------------------------------

    def avgpool2d_forward(
        self, x, kernel=2, stride=None, *, check_finite=True, out=None, check=True
    ):
        """Mean over kernel x kernel windows (stride defaults to kernel), no padding."""
        x = checks.float_array("x", x, 4)
        kernel, stride, y_shape = checks.pool_args(x.shape, kernel, stride)
        if check_finite:
            checks.finite("x", x)
        y = np.zeros(y_shape, dtype=np.float64)
        ho, wo = y_shape[2], y_shape[3]
        for i in range(kernel):
            for j in range(kernel):
                y += x[
                    :,
                    :,
                    i : i + stride * (ho - 1) + 1 : stride,
                    j : j + stride * (wo - 1) + 1 : stride,
                ]
        return self._into(out, (y / (kernel * kernel)).astype(x.dtype))

    def avgpool2d_backward(
        self, dy, x_shape, kernel=2, stride=None, *, check_finite=True, out=None, check=True
    ):
        dy = checks.float_array("dy", dy, 4)
        x_shape = checks.shape_tuple("x_shape", x_shape)
        kernel, stride, y_shape = checks.pool_args(x_shape, kernel, stride)
        checks.expect_shape("dy", dy, y_shape)
        if check_finite:
            checks.finite("dy", dy)
        dx = np.zeros(x_shape, dtype=np.float64)
        ho, wo = y_shape[2], y_shape[3]
        share = dy.astype(np.float64) / (kernel * kernel)
        for i in range(kernel):
            for j in range(kernel):
                dx[
                    :,
                    :,
                    i : i + stride * (ho - 1) + 1 : stride,
                    j : j + stride * (wo - 1) + 1 : stride,
                ] += share
        return self._into(out, dx.astype(dy.dtype))

    def global_avgpool2d_forward(self, x, *, check_finite=True, out=None, check=True):
        """(N, C, H, W) -> (N, C): the mean of each plane."""
        x = checks.float_array("x", x, 4)
        if min(x.shape) < 1:
            raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
        if check_finite:
            checks.finite("x", x)
        return self._into(out, x.mean(axis=(2, 3), dtype=np.float64).astype(x.dtype))

    def global_avgpool2d_backward(self, dy, x_shape, *, check_finite=True, out=None, check=True):
        dy = checks.float_array("dy", dy, 2)
        x_shape = checks.shape_tuple("x_shape", x_shape)
        checks.expect_shape("dy", dy, x_shape[:2])
        if check_finite:
            checks.finite("dy", dy)
        plane = x_shape[2] * x_shape[3]
        share = (dy.astype(np.float64) / plane).astype(dy.dtype)
        return self._into(
            out, np.ascontiguousarray(np.broadcast_to(share[:, :, None, None], x_shape))
        )

    # ---- leaky ReLU ---------------------------------------------------------------------------

    def leaky_relu_forward(self, x, slope=0.01, *, check_finite=True, out=None, check=True):
        """x where x > 0, else slope * x (any shape)."""
        slope = checks.slope(slope)
        x = (
            checks.float_array("x", x, np.ndim(x))
            if isinstance(x, np.ndarray)
            else checks.float_array("x", x, 1)
        )
        if check_finite:
            checks.finite("x", x)
        return self._into(out, np.where(x > 0, x, x * x.dtype.type(slope)))

    def leaky_relu_backward(self, x, dy, slope=0.01, *, check_finite=True, out=None, check=True):
        """dy where x > 0, else slope * dy."""
        slope = checks.slope(slope)
        x = (
            checks.float_array("x", x, np.ndim(x))
            if isinstance(x, np.ndarray)
            else checks.float_array("x", x, 1)
        )
        dy = checks.float_array("dy", dy, x.ndim)
        checks.expect_shape("dy", dy, x.shape)
        checks.same_dtype(x=x, dy=dy)
        if check_finite:
            checks.finite("dy", dy)
        return self._into(out, np.where(x > 0, dy, dy * dy.dtype.type(slope)))

    # ---- label-smoothed cross-entropy ---------------------------------------------------------

    def smoothed_cross_entropy(
        self, logits, labels, smoothing=0.1, *, check_finite=True, out=None, check=True
    ):
        """Mean cross-entropy of softmax(logits) against targets (1 - smoothing) * onehot +
        smoothing / classes, and its gradient (already divided by N). smoothing=0 is
        softmax_cross_entropy."""
        logits, labels, smoothing = checks.smoothed_cross_entropy_args(logits, labels, smoothing)
        if check_finite:
            checks.finite("logits", logits)
        n, classes = logits.shape
        z = logits.astype(np.float64)
        shifted = z - z.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        target = np.full((n, classes), smoothing / classes)
        target[np.arange(n), labels] += 1.0 - smoothing
        loss = -(target * log_probs).sum(axis=1).mean()
        dlogits = (np.exp(log_probs) - target) / n
        return logits.dtype.type(loss), self._into(out, dlogits.astype(logits.dtype))

    # ---- augmentation: the batch gather with an affine warp per image -------------------------

    def gather_affine(self, x, index, matrices, out=None):
        """out[b] = x[index[b]] (N, C, H, W floats) warped by matrices[b] = (a, b, c, d, e, f):
        output pixel (row i, column j) samples x bilinearly at column a*j + b*i + c, row
        d*j + e*i + f, zero outside the image."""
        x = checks.float_array("x", x, 4)
        index = np.asarray(index)
        if index.ndim != 1 or index.dtype.kind not in "iu":
            raise TypeError("index must be a 1-D integer array")
        if index.size and (index.min() < 0 or index.max() >= x.shape[0]):
            raise IndexError(f"index values must be in [0, {x.shape[0]})")
        batch = index.shape[0]
        m = affine_matrices(matrices, batch)
        _, c, h, w = x.shape
        jj, ii = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
        sx = m[:, 0, None, None] * jj + m[:, 1, None, None] * ii + m[:, 2, None, None]
        sy = m[:, 3, None, None] * jj + m[:, 4, None, None] * ii + m[:, 5, None, None]
        x0, y0 = np.floor(sx), np.floor(sy)
        fx, fy = sx - x0, sy - y0
        x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
        src = x[index].astype(np.float64)  # (B, C, H, W)
        result = np.zeros((batch, c, h, w))
        rows = np.arange(batch)[:, None, None]
        for dy_, dx_, weight in (
            (0, 0, (1 - fy) * (1 - fx)),
            (0, 1, (1 - fy) * fx),
            (1, 0, fy * (1 - fx)),
            (1, 1, fy * fx),
        ):
            yy, xx = y0 + dy_, x0 + dx_
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            values = src[rows, :, np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)]  # (B,H,W,C)
            result += np.moveaxis(values * (weight * inside)[..., None], -1, 1)
        result = result.astype(x.dtype)
        if out is not None:
            out[:batch] = result
            return out[:batch]
        return result
