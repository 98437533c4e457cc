"""The workloads written from scratch in plain NumPy, as in a from-scratch notebook.

This is the "NumPy from scratch" column of the benchmark table: what a careful person writes
without a framework. Matrix products go to NumPy's BLAS; convolutions are im2col + one matmul;
max-pooling is a reshape; SGD with momentum is PyTorch's (v = m*v + g; p -= lr*v). Nothing here
is tuned beyond that, on purpose. Layers cache what their backward pass needs.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class Dense:
    """z = x @ W + b, with W stored (in, out) as notebooks write it."""

    def __init__(self, weight, bias):
        self.W = np.ascontiguousarray(weight.T)
        self.b = bias.copy()

    def forward(self, x):
        self.x = x
        return x @ self.W + self.b

    def backward(self, dz, need_dx=True):
        self.dW = self.x.T @ dz
        self.db = dz.sum(axis=0)
        return dz @ self.W.T if need_dx else None

    def params(self):
        return [(self.W, "dW"), (self.b, "db")]


class Conv2d:
    """Stride-1 convolution, NCHW, by im2col: every k x k window becomes a row of `cols`."""

    def __init__(self, weight, bias, padding):
        self.W = weight.copy()  # (C_out, C_in, k, k)
        self.b = bias.copy()
        self.pad = padding

    def forward(self, x):
        p, k = self.pad, self.W.shape[2]
        xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
        n, c, h, w = xp.shape
        self.out_hw = h - k + 1, w - k + 1
        self.x_shape = xp.shape
        windows = sliding_window_view(xp, (k, k), axis=(2, 3))  # (N, C, Ho, Wo, k, k)
        self.cols = windows.transpose(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        out = self.cols @ self.W.reshape(len(self.W), -1).T + self.b  # (N*Ho*Wo, C_out)
        return out.reshape(n, *self.out_hw, -1).transpose(0, 3, 1, 2)

    def backward(self, dy, need_dx=True):
        c_out, c_in, k, _ = self.W.shape
        dout = dy.transpose(0, 2, 3, 1).reshape(-1, c_out)
        self.dW = (dout.T @ self.cols).reshape(self.W.shape)
        self.db = dout.sum(axis=0)
        if not need_dx:
            return None
        n, _, h, w = self.x_shape
        ho, wo = self.out_hw
        dcols = (dout @ self.W.reshape(c_out, -1)).reshape(n, ho, wo, c_in, k, k)
        dxp = np.zeros(self.x_shape, dtype=dy.dtype)
        for i in range(k):  # col2im: scatter each kernel tap back onto the input
            for j in range(k):
                dxp[:, :, i : i + ho, j : j + wo] += dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
        p = self.pad
        return dxp[:, :, p : h - p, p : w - p] if p else dxp

    def params(self):
        return [(self.W, "dW"), (self.b, "db")]


class MaxPool:
    """k x k max-pooling, stride k. The gradient goes to the first maximum of each window
    (as in PyTorch); a mask `x == max` would send it to every tied input, and ties are common
    where strokes saturate at 1.0."""

    def __init__(self, k):
        self.k = k

    def forward(self, x):
        n, c, h, w = x.shape
        k = self.k
        # (N, C, Ho, Wo, k*k): each pooling window as one row
        windows = x.reshape(n, c, h // k, k, w // k, k).transpose(0, 1, 2, 4, 3, 5)
        windows = windows.reshape(n, c, h // k, w // k, k * k)
        self.argmax = windows.argmax(axis=-1)[..., None]
        self.x_shape = x.shape
        return np.take_along_axis(windows, self.argmax, axis=-1)[..., 0]

    def backward(self, dy, need_dx=True):
        n, c, h, w = self.x_shape
        k = self.k
        dwindows = np.zeros((n, c, h // k, w // k, k * k), dtype=dy.dtype)
        np.put_along_axis(dwindows, self.argmax, dy[..., None], axis=-1)
        dx = dwindows.reshape(n, c, h // k, w // k, k, k).transpose(0, 1, 2, 4, 3, 5)
        return dx.reshape(self.x_shape)

    def params(self):
        return []


class ReLU:
    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy, need_dx=True):
        return dy * self.mask

    def params(self):
        return []


class Flatten:
    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(len(x), -1)

    def backward(self, dy, need_dx=True):
        return dy.reshape(self.x_shape)

    def params(self):
        return []


def softmax_cross_entropy(logits, labels):
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    probs = exp / exp.sum(axis=1, keepdims=True)
    n = len(labels)
    loss = -np.log(probs[np.arange(n), labels] + 1e-12).mean()
    dlogits = probs
    dlogits[np.arange(n), labels] -= 1
    return loss, dlogits / n


class Network:
    """A workload (see workloads.py) as a list of from-scratch layers, trained with SGD."""

    def __init__(self, workload, params, lr, momentum):
        weights = iter(params)
        self.layers = []
        for spec in workload.layers:
            kind = spec[0]
            if kind == "conv":
                self.layers.append(Conv2d(*next(weights), padding=spec[4]))
            elif kind == "linear":
                self.layers.append(Dense(*next(weights)))
            elif kind == "pool":
                self.layers.append(MaxPool(spec[1]))
            elif kind == "relu":
                self.layers.append(ReLU())
            else:
                self.layers.append(Flatten())
        self.lr, self.momentum = lr, momentum
        self.velocity = {
            id(p): np.zeros_like(p) for layer in self.layers for p, _ in layer.params()
        }

    def forward(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def train_step(self, x, y):
        loss, grad = softmax_cross_entropy(self.forward(x), y)
        for i in range(len(self.layers) - 1, -1, -1):
            # the first layer's input gradient would be the gradient of the images: skip it
            grad = self.layers[i].backward(grad, need_dx=i > 0)
        for layer in self.layers:
            for p, grad_name in layer.params():
                v = self.velocity[id(p)]
                v *= self.momentum
                v += getattr(layer, grad_name)
                p -= self.lr * v
        return loss

    def predict(self, x):
        return self.forward(x).argmax(axis=1)

    def weights(self):
        """[(weight, bias)] in PyTorch layouts, to compare with the other implementations."""
        out = []
        for layer in self.layers:
            if isinstance(layer, Dense):
                out.append((layer.W.T, layer.b))
            elif isinstance(layer, Conv2d):
                out.append((layer.W, layer.b))
        return out
