"""One workload, one implementation, ready to time: a training step, an epoch, inference.

Shared by the pytest benchmarks and compare.py so both time exactly the same calls. Each
implementation starts from the same weights (Workload.initial_params) and sees the same data;
the epoch of NumPy-from-scratch and PyTorch walks the same shuffled batches (fastnn's epoch is
Trainer.fit, which shuffles with its own seeded generator).
"""

import workloads as W

IMPLS = ("fastnn", "numpy-scratch", "pytorch")
# Inference also runs through ONNX Runtime, on the graph fastnn exports of the same weights.
INFER_IMPLS = IMPLS + ("onnxruntime",)


class Unavailable(Exception):
    """This implementation cannot run here; the message says why."""


def _network(impl, workload, backend):
    params = workload.initial_params(W.SEED)
    if impl == "fastnn":
        try:
            import fastnn_impl
        except ImportError as exc:
            raise Unavailable(f"fastnn's model API is not importable: {exc}") from None
        from fastnn import backends

        try:
            return fastnn_impl.Network(workload, params, W.LR, W.MOMENTUM, backend=backend)
        except backends.BackendUnavailable as exc:
            raise Unavailable(str(exc)) from None
    if impl == "numpy-scratch":
        import numpy_scratch

        return numpy_scratch.Network(workload, params, W.LR, W.MOMENTUM)
    if impl == "pytorch":
        import torch_impl

        if not torch_impl.available():
            raise Unavailable(torch_impl.why_unavailable())
        return torch_impl.Network(workload, params, W.LR, W.MOMENTUM)
    if impl == "onnxruntime":
        import ort_impl

        if not ort_impl.available():
            raise Unavailable(ort_impl.why_unavailable())
        return ort_impl.Network(_network("fastnn", workload, backend))
    raise ValueError(f"unknown implementation {impl!r}; expected one of {INFER_IMPLS}")


class Runner:
    """`impl` ("fastnn", "numpy-scratch", "pytorch") running `workload` on MNIST (x, y):
    x (N, 784) float32 in [0, 1], y (N,) int64. `backend` is fastnn's backend."""

    def __init__(self, impl, workload, x, y, backend="cpu"):
        if isinstance(workload, str):
            workload = W.WORKLOADS[workload]
        self.impl, self.workload = impl, workload
        self.net = _network(impl, workload, backend)
        self.x = W.inputs_for(workload, x)
        self.y = y
        self.batches = W.epoch_batches(len(x))

    def _as_input(self, a):
        tensor = getattr(self.net, "tensor", None)
        return tensor(a) if tensor is not None else a

    def step(self):
        """A callable doing one training step on a fixed batch of 128 (inputs made beforehand)."""
        first = self.batches[0]
        xb, yb = self._as_input(self.x[first]), self._as_input(self.y[first])
        net = self.net
        return lambda: net.train_step(xb, yb)

    def epoch(self):
        """A callable training one epoch over all of x (shuffled batches of 128)."""
        net = self.net
        if self.impl == "fastnn":
            x, y = self.x, self.y
            return lambda: net.epoch(x, y, W.BATCH)
        if self.impl == "pytorch":
            import torch

            x, y = net.tensor(self.x), net.tensor(self.y)
            batches = [torch.from_numpy(b) for b in self.batches]
        else:
            x, y, batches = self.x, self.y, self.batches

        def run():
            for b in batches:
                net.train_step(x[b], y[b])

        return run

    def infer(self, n):
        """A callable predicting the classes of the first n samples in one call."""
        net = self.net
        xs = self.x[:n].copy()
        if self.impl in ("pytorch", "onnxruntime"):
            xs = net.tensor(xs)
        return lambda: net.predict(xs)
