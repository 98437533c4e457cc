"""The cuda backend's batch norm, average pooling and leaky ReLU (kernels/norm.cu), with the
meaning of fastnn/backends/numpy_layers.py. The cuda backend computes in float32 only, so
here the running statistics and the `mean` / `inv_std` handed to the backward pass are
float32 device arrays (C,); the per-channel arithmetic between kernels is a few tiny device
array operations."""

import numpy as np

from ... import validation as checks
from ...validation import bn_hyper

_F32 = np.dtype(np.float32)


class CudaLayerKernels:
    """Mixed into CudaBackend (which provides xp, kernels, threads, _grid, _f32, _finite)."""

    def _bn_x(self, x, gamma, beta):
        if not isinstance(x, self.xp.ndarray) or x.ndim not in (2, 4):
            raise ValueError(
                f"x must have shape (N, C) or (N, C, H, W), got {getattr(x, 'shape', None)}"
            )
        x = self._f32("x", x, x.ndim)
        if min(x.shape) < 1:
            raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
        c = x.shape[1]
        gamma = self._f32("gamma", gamma, 1)
        beta = self._f32("beta", beta, 1)
        checks.expect_shape("gamma", gamma, (c,))
        checks.expect_shape("beta", beta, (c,))
        return x, gamma, beta, c, x.size // (x.shape[0] * c)

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
        x, gamma, beta, c, positions = self._bn_x(x, gamma, beta)
        momentum, eps = bn_hyper(momentum, eps)
        checks.running_stats(running_mean, running_var, c, _F32, self.xp)
        if check_finite:
            self._finite("x", x)
        xp = self.xp
        if training:
            count = x.shape[0] * positions
            if count < 2:
                raise ValueError(
                    f"training-mode batch normalization needs more than one value "
                    f"per channel, got x of shape {tuple(x.shape)}"
                )
            mean = xp.empty(c, dtype=_F32)
            var = xp.empty(c, dtype=_F32)
            self.kernels.batchnorm_stats(
                c, self._reduce_threads(count), x, mean, var, x.shape[0], c, positions
            )
            running_mean *= np.float32(1.0 - momentum)
            running_mean += np.float32(momentum) * mean
            running_var *= np.float32(1.0 - momentum)
            running_var += np.float32(momentum * count / (count - 1)) * var
        else:
            mean = running_mean.copy()
            var = running_var
        inv_std = (1.0 / xp.sqrt(var + np.float32(eps))).astype(_F32)
        scale = (gamma * inv_std).astype(_F32)
        shift = (beta - mean * scale).astype(_F32)
        y = xp.empty_like(x)
        self.kernels.batchnorm_scale_shift(
            self._grid(x.size),
            self.threads,
            x,
            scale,
            shift,
            y,
            x.size,
            c,
            positions,
            int(bool(relu)),
        )
        return self._into(out, y), mean, inv_std

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
        x, gamma, _, c, positions = self._bn_x(x, gamma, gamma)
        dy = self._f32("dy", dy, x.ndim)
        checks.expect_shape("dy", dy, x.shape)
        y = self._f32("y", y, x.ndim) if relu else x
        checks.expect_shape("y", y, x.shape)
        mean = self._f32("mean", mean, 1)
        inv_std = self._f32("inv_std", inv_std, 1)
        checks.expect_shape("mean", mean, (c,))
        checks.expect_shape("inv_std", inv_std, (c,))
        if check_finite:
            self._finite("dy", dy)
        xp = self.xp
        dgamma = xp.empty(c, dtype=_F32)
        dbeta = xp.empty(c, dtype=_F32)
        self.kernels.batchnorm_backward_sums(
            c,
            self._reduce_threads(x.shape[0] * positions),
            x,
            y,
            dy,
            mean,
            inv_std,
            dgamma,
            dbeta,
            x.shape[0],
            c,
            positions,
            int(bool(relu)),
        )
        dx = None
        if need_dx:
            dx = xp.empty_like(x)
            self.kernels.batchnorm_backward_dx(
                self._grid(x.size),
                self.threads,
                x,
                y,
                dy,
                gamma,
                mean,
                inv_std,
                dgamma,
                dbeta,
                dx,
                x.size,
                c,
                positions,
                int(bool(relu)),
            )
        return self._grads_into(out, dx, dgamma, dbeta)

    def avgpool2d_forward(
        self, x, kernel=2, stride=None, *, check_finite=True, out=None, check=True
    ):
        x = self._f32("x", x, 4)
        kernel, stride, y_shape = checks.pool_args(x.shape, kernel, stride)
        if check_finite:
            self._finite("x", x)
        y = self.xp.empty(y_shape, dtype=_F32)
        self.kernels.avgpool_forward(
            self._grid(y.size),
            self.threads,
            x,
            y,
            y.size,
            x.shape[2],
            x.shape[3],
            y_shape[2],
            y_shape[3],
            kernel,
            stride,
        )
        return self._into(out, y)

    def avgpool2d_backward(
        self, dy, x_shape, kernel=2, stride=None, *, check_finite=True, out=None, check=True
    ):
        dy = self._f32("dy", dy, 4)
        x_shape = checks.shape_tuple("x_shape", x_shape)
        kernel, stride, y_shape = checks.pool_args(x_shape, kernel, stride)
        checks.expect_shape("dy", dy, y_shape)
        if check_finite:
            self._finite("dy", dy)
        dx = self.xp.empty(x_shape, dtype=_F32)
        self.kernels.avgpool_backward(
            self._grid(dx.size),
            self.threads,
            dy,
            dx,
            dx.size,
            x_shape[2],
            x_shape[3],
            y_shape[2],
            y_shape[3],
            kernel,
            stride,
        )
        return self._into(out, dx)

    def global_avgpool2d_forward(self, x, *, check_finite=True, out=None, check=True):
        x = self._f32("x", x, 4)
        if min(x.shape) < 1:
            raise ValueError(f"x must not be empty, got shape {tuple(x.shape)}")
        if check_finite:
            self._finite("x", x)
        n, c, h, w = x.shape
        y = self.xp.empty((n, c), dtype=_F32)
        self.kernels.global_avgpool_forward(self._grid(n * c), self.threads, x, y, n * c, h * w)
        return self._into(out, y)

    def global_avgpool2d_backward(self, dy, x_shape, *, check_finite=True, out=None, check=True):
        dy = self._f32("dy", dy, 2)
        x_shape = checks.shape_tuple("x_shape", x_shape)
        checks.expect_shape("dy", dy, x_shape[:2])
        if check_finite:
            self._finite("dy", dy)
        dx = self.xp.empty(x_shape, dtype=_F32)
        self.kernels.global_avgpool_backward(
            self._grid(dx.size), self.threads, dy, dx, dx.size, x_shape[2] * x_shape[3]
        )
        return self._into(out, dx)

    def leaky_relu_forward(self, x, slope=0.01, *, check_finite=True, out=None, check=True):
        slope = checks.slope(slope)
        x = self._f32("x", x, getattr(x, "ndim", 1))
        if check_finite:
            self._finite("x", x)
        y = self.xp.empty_like(x)
        self.kernels.leaky_relu_forward(self._grid(x.size), self.threads, x, y, x.size, slope)
        return self._into(out, y)

    def leaky_relu_backward(self, x, dy, slope=0.01, *, check_finite=True, out=None, check=True):
        slope = checks.slope(slope)
        x = self._f32("x", x, getattr(x, "ndim", 1))
        dy = self._f32("dy", dy, x.ndim)
        checks.expect_shape("dy", dy, x.shape)
        if check_finite:
            self._finite("dy", dy)
        dx = self.xp.empty_like(x)
        self.kernels.leaky_relu_backward(self._grid(x.size), self.threads, x, dy, dx, x.size, slope)
        return self._into(out, dx)
