"""Evaluation with each BatchNorm folded into the Linear or Conv2d right before it.

In evaluation a batch norm is a fixed per-channel x * scale + shift, so a Linear or Conv2d
followed by it computes the same as one layer with weight * scale (per output channel) and
bias * scale + shift. Sequential keeps, beside its training run list, an evaluation run list
in which each such pair (and the ReLU fused into the batch norm, and on cpu the max-pool after
them) is one stand-in layer of the folded weights; the stand-ins' weights are recomputed from
the live parameters and running statistics at every evaluation forward pass, which costs one
pass over the weights.
"""
import numpy as np

from . import layers as L
from .extra_layers import _BatchNorm


class FoldedEval:
    """The evaluation run list of a model whose run list has BatchNorms after a Linear/Conv2d."""

    def __init__(self, run, backend, dtype, pool_fuses):
        self._pairs = []   # (original layer, batch norm, stand-in)
        self._run = []
        i = 0
        while i < len(run):
            layer = run[i]
            bn = run[i + 1] if i + 1 < len(run) else None
            if isinstance(layer, (L.Linear, L.Conv2d)) and isinstance(bn, _BatchNorm) and \
                    not layer.relu and getattr(layer, "pool", None) is None:
                stand_in = type(layer)(**layer.config())
                stand_in._backend = backend
                stand_in.relu = bn.relu
                i += 2
                if isinstance(layer, L.Conv2d) and pool_fuses and i < len(run) and \
                        type(run[i]) is L.MaxPool2d and run[i].stride == run[i].kernel_size:
                    stand_in.pool = run[i]
                    i += 1
                stand_in.need_dx = False
                self._pairs.append((layer, bn, stand_in))
                self._run.append(stand_in)
                bn.folded = True
                continue
            self._run.append(layer)
            i += 1
        self._dtype = dtype
        self._backend = backend

    def __bool__(self):
        return bool(self._pairs)

    def run(self):
        """The evaluation run list, its stand-ins' weights folded from the current values."""
        b, dtype = self._backend, self._dtype
        for layer, bn, stand_in in self._pairs:
            scale, shift = bn.fold_factors()
            w = np.asarray(b.to_numpy(layer.params[0]), np.float64)
            bias = np.asarray(b.to_numpy(layer.params[1]), np.float64)
            w = w * scale.reshape((-1,) + (1,) * (w.ndim - 1))
            stand_in.set_params([b.asarray(w.astype(dtype)),
                                 b.asarray((bias * scale + shift).astype(dtype))])
            stand_in._backend = b
            stand_in._bind()
        return self._run

    @staticmethod
    def release(run):
        for layer in run:
            if isinstance(layer, _BatchNorm):
                layer.folded = False
