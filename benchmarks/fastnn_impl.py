"""The workloads through fastnn's public API: nn.Sequential, optim.SGD, Trainer.

`train_step` is what Trainer.fit does for one batch (forward, fused softmax-CE, backward, SGD
step); `epoch` is Trainer.fit itself for one epoch, as a user runs it (shuffling, batching and
its checks included).
"""

import numpy as np

import fastnn
from fastnn import nn, optim


def build_model(workload):
    """The workload as a fastnn Sequential (random weights; see `Network` for fixed ones)."""
    layers = []
    for spec in workload.layers:
        kind = spec[0]
        if kind == "conv":
            _, cin, cout, k, pad = spec
            layers.append(nn.Conv2d(cin, cout, k, padding=pad))
        elif kind == "linear":
            layers.append(nn.Linear(spec[1], spec[2]))
        elif kind == "pool":
            layers.append(nn.MaxPool2d(spec[1]))
        elif kind == "relu":
            layers.append(nn.ReLU())
        else:
            layers.append(nn.Flatten())
    return nn.Sequential(*layers, input_shape=workload.input_shape)


class Network:
    def __init__(self, workload, params, lr, momentum, backend="cpu", seed=0):
        fastnn.seed(seed)
        self.model = build_model(workload)
        names = list(self.model.param_shapes())
        flat = [a for pair in params for a in pair]
        if len(names) != len(flat):
            raise ValueError(
                f"{workload.name}: fastnn has {len(names)} parameters, the workload {len(flat)}"
            )
        self.model.load_state_dict(dict(zip(names, flat)))
        self.optimizer = optim.SGD(lr=lr, momentum=momentum)
        self.trainer = fastnn.Trainer(
            self.model, self.optimizer, loss="cross_entropy", backend=backend
        )
        self.backend = self.trainer.backend
        self.optimizer.attach(self.model)

    def tensor(self, a):
        """A batch as the backend takes it (float32 images, int64 labels)."""
        a = np.ascontiguousarray(a)
        if a.dtype.kind in "iu":
            return self.backend.xp.asarray(a.astype(np.int64, copy=False))
        return self.backend.asarray(a)

    def train_step(self, x, y):
        step = getattr(self.trainer, "train_step", None)
        if step is not None:  # a public one-step API, when the trainer has one
            return step(x, y)
        out = self.model.forward(x, True)
        loss, dout = self.trainer.loss(self.backend, out, y)
        self.model.backward(dout)
        self.optimizer.step()
        return loss

    def epoch(self, x, y, batch_size=128):
        return self.trainer.fit(x, y, epochs=1, batch_size=batch_size, verbose=0, progress=False)

    def predict(self, x):
        return self.model.predict(x)

    def weights(self):
        state = self.model.state_dict()
        values = list(state.values())
        return list(zip(values[0::2], values[1::2]))
