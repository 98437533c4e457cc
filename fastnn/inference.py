"""Inference of an MLP in one compiled call: the plan behind Sequential.predict on cpu.

A model whose running layers are Flatten and Linear (ReLU fused) only, on a backend with the
compiled chain kernel, predicts through `DensePlan`: the weights' addresses and output buffers
are fixed once, so a call is one kernel entry (every layer's GEMM, bias, ReLU and the argmax)
instead of a Python pass per layer. On a few samples that overhead is most of the time.

Threads: the plan itself is immutable once built (the layers, their parameter arrays, the
dtype). The output buffers, and the address table that points the kernel at them, are per
thread (`threading.local`): several threads predicting with one model at once each write
their own buffers, and a thread's later calls reuse its buffers, so a batch-1 call still
allocates nothing but its result. A thread's buffers go when the thread ends or the plan is
replaced (new parameters, another dtype).
"""
import threading

import numpy as np

# Rows the kept output buffers hold at most; larger inputs are run in slices of this many.
MAX_ROWS = 1024


class DensePlan:
    """The chain of `model`'s Linear layers, with buffers for up to MAX_ROWS rows."""

    def __init__(self, model, chain):
        self._chain_forward = model.backend.dense_chain_forward
        self.layers = [layer for layer, _ in chain]
        self.params = [tuple(layer.params) for layer in self.layers]
        # (in_features, out_features, relu) per layer, fixed here so a workspace made later
        # describes the same chain as the parameters above
        self.shapes = [(layer.in_features, layer.out_features, int(relu))
                       for layer, relu in chain]
        self.dtype = model.dtype
        self._per_thread = threading.local()  # .workspace: this thread's _Workspace

    @classmethod
    def build(cls, model):
        """A plan for `model`, or None when it is not a plain chain of Linear layers on a
        backend with the chain kernel."""
        if not model.backend.runs_dense_chain:
            return None
        chain = model.plan.linear_chain()  # None unless leading Flattens and Linear layers
        return None if chain is None else cls(model, chain)

    def current(self, model):
        """Whether this plan still describes `model` (same layers, same parameter arrays)."""
        if self.dtype != model.dtype:
            return False
        for layer, params in zip(self.layers, self.params):
            if layer.params[0] is not params[0] or layer.params[1] is not params[1]:
                return False
        return True

    def _workspace(self, rows):
        """This thread's buffers, with room for at least `rows` rows."""
        workspace = getattr(self._per_thread, "workspace", None)
        if workspace is None or workspace.rows < rows:
            workspace = self._per_thread.workspace = _Workspace(self, rows)
        return workspace

    def predict(self, x):
        """Class indices (a new int64 array) for x, a C-contiguous (N, in_features) array of
        the model's dtype; NaN or infinity in x raises ValueError."""
        n = x.shape[0]
        if n <= MAX_ROWS:
            workspace = self._workspace(n)
            labels = workspace.labels[:n]
            self._chain_forward(x, workspace.table, labels)
            return labels.copy()
        return np.concatenate([self.predict(x[i:i + MAX_ROWS]) for i in range(0, n, MAX_ROWS)])

    def outputs(self, x):
        """The last layer's outputs (a new array) for x, as predict takes it."""
        n = x.shape[0]
        if n <= MAX_ROWS:
            workspace = self._workspace(n)
            self._chain_forward(x, workspace.table, None)
            return workspace.buffers[-1][:n].copy()
        return np.concatenate([self.outputs(x[i:i + MAX_ROWS]) for i in range(0, n, MAX_ROWS)])


class _Workspace:
    """One thread's output buffers for a plan, and the kernel's table of addresses into them
    (weights, bias, output, in and out features, ReLU per layer)."""

    __slots__ = ("buffers", "labels", "rows", "table")

    def __init__(self, plan, rows):
        self.rows = rows
        self.buffers = [np.empty((rows, fout), plan.dtype) for _, fout, _ in plan.shapes]
        self.table = np.array(
            [[w.ctypes.data, b.ctypes.data, y.ctypes.data, fin, fout, relu]
             for (fin, fout, relu), (w, b), y in zip(plan.shapes, plan.params, self.buffers)],
            dtype=np.int64)
        self.labels = np.empty(rows, np.int64)
