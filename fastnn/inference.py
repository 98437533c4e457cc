"""Inference of an MLP in one compiled call: the plan behind Sequential.predict on cpu.

A model whose running layers are Flatten and Linear (ReLU fused) only, on a backend with the
compiled chain kernel, predicts through `DensePlan`: the weights' addresses and output buffers
are fixed once, so a call is one kernel entry (every layer's GEMM, bias, ReLU and the argmax)
instead of a Python pass per layer. On a few samples that overhead is most of the time.
"""
import numpy as np

from . import layers as L

# Rows the kept output buffers hold at most; larger inputs are run in slices of this many.
MAX_ROWS = 1024


class DensePlan:
    """The chain of `model`'s Linear layers, with buffers for up to MAX_ROWS rows."""

    def __init__(self, model, chain_forward):
        self._chain_forward = chain_forward
        self.layers = [layer for layer in model._run if isinstance(layer, L.Linear)]
        self.params = [tuple(layer.params) for layer in self.layers]
        self.dtype = model.dtype
        self._rows = 0
        self._buffers = []
        self._table = None
        self._labels = None

    @classmethod
    def build(cls, model):
        """A plan for `model`, or None when it is not a plain chain of Linear layers on a
        backend with the chain kernel."""
        chain_forward = getattr(getattr(model.backend, "unchecked", None), "chain_forward", None)
        run = model._run
        if chain_forward is None or not run:
            return None
        seen_linear = False
        for layer in run:
            if isinstance(layer, L.Linear):
                seen_linear = True
            elif not (isinstance(layer, L.Flatten) and not seen_linear):
                return None  # anything but leading Flattens and Linear layers
        if not seen_linear:
            return None
        return cls(model, chain_forward)

    def current(self, model):
        """Whether this plan still describes `model` (same layers, same parameter arrays)."""
        if self.dtype != model.dtype:
            return False
        for layer, params in zip(self.layers, self.params):
            if layer.params[0] is not params[0] or layer.params[1] is not params[1]:
                return False
        return True

    def _ensure(self, rows):
        if rows <= self._rows:
            return
        self._buffers = [np.empty((rows, layer.out_features), self.dtype)
                         for layer in self.layers]
        self._table = np.array(
            [[w.ctypes.data, b.ctypes.data, y.ctypes.data, layer.in_features,
              layer.out_features, int(layer.relu)]
             for layer, (w, b), y in zip(self.layers, self.params, self._buffers)],
            dtype=np.int64)
        self._labels = np.empty(rows, np.int64)
        self._rows = rows

    def predict(self, x):
        """Class indices (a new int64 array) for x, a C-contiguous (N, in_features) array of
        the model's dtype; NaN or infinity in x raises ValueError."""
        n = x.shape[0]
        if n <= MAX_ROWS:
            self._ensure(n)
            labels = self._labels[:n]
            self._chain_forward(x, self._table, labels)
            return labels.copy()
        return np.concatenate([self.predict(x[i:i + MAX_ROWS]) for i in range(0, n, MAX_ROWS)])

    def outputs(self, x):
        """The last layer's outputs (a new array) for x, as predict takes it."""
        n = x.shape[0]
        if n <= MAX_ROWS:
            self._ensure(n)
            self._chain_forward(x, self._table, None)
            return self._buffers[-1][:n].copy()
        return np.concatenate([self.outputs(x[i:i + MAX_ROWS]) for i in range(0, n, MAX_ROWS)])
