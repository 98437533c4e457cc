"""The benchmark workloads of issue 5, described once and built by every implementation.

A workload is a list of layer specs, in the order of the network:

    ("conv", c_in, c_out, kernel, padding)   stride 1
    ("pool", kernel)                          max-pool, stride = kernel
    ("relu",)
    ("flatten",)
    ("linear", in_features, out_features)

`initial_params` draws one set of weights (PyTorch layouts: Linear (out, in), Conv2d
(C_out, C_in, kH, kW)) from a seed, so fastnn, NumPy-from-scratch and PyTorch can all start from
the very same network, and `flops` counts the work the issue's GFLOP figures are based on.
"""

from dataclasses import dataclass

import numpy as np

BATCH = 128
LR = 0.05
MOMENTUM = 0.9
SEED = 0


@dataclass(frozen=True)
class Workload:
    name: str
    layers: tuple
    input_shape: tuple  # one sample: (784,) for MLPs, (1, 28, 28) for CNNs

    @property
    def is_cnn(self):
        return len(self.input_shape) == 3

    def shapes(self):
        """[(spec, input shape of one sample, output shape of one sample)] for every layer."""
        out = []
        shape = self.input_shape
        for spec in self.layers:
            kind = spec[0]
            if kind == "conv":
                _, cin, cout, k, pad = spec
                c, h, w = shape
                if c != cin:
                    raise ValueError(f"{self.name}: conv expects {cin} channels, gets {c}")
                new = (cout, h + 2 * pad - k + 1, w + 2 * pad - k + 1)
            elif kind == "pool":
                c, h, w = shape
                new = (c, h // spec[1], w // spec[1])
            elif kind == "flatten":
                new = (int(np.prod(shape)),)
            elif kind == "linear":
                if shape != (spec[1],):
                    raise ValueError(
                        f"{self.name}: linear expects {spec[1]} features, gets {shape}"
                    )
                new = (spec[2],)
            else:  # relu
                new = shape
            out.append((spec, shape, new))
            shape = new
        return out

    def layer_macs(self):
        """Multiply-adds of one sample's forward pass, per layer (0 for relu/pool/flatten)."""
        macs = []
        for spec, _, out in self.shapes():
            if spec[0] == "conv":
                _, cin, cout, k, _ = spec
                macs.append(out[1] * out[2] * cout * cin * k * k)
            elif spec[0] == "linear":
                macs.append(spec[1] * spec[2])
            else:
                macs.append(0)
        return macs

    def forward_flops(self):
        """FLOPs of one sample's forward pass (2 per multiply-add)."""
        return 2 * sum(self.layer_macs())

    def train_flops(self):
        """FLOPs of one sample's training step: forward, weight gradients, and input gradients
        for every layer but the first (nobody needs the gradient of the images). This is how
        the issue counts 145 GFLOP per epoch for the big MLP and 1.34 TFLOP for the CNN."""
        macs = self.layer_macs()
        first = next(m for m in macs if m)
        return 2 * (3 * sum(macs) - first)

    def initial_params(self, seed=SEED, dtype=np.float32):
        """[(weight, bias)] per conv/linear layer, He-initialised, from `seed`."""
        rng = np.random.default_rng(seed)
        params = []
        for spec in self.layers:
            if spec[0] == "conv":
                _, cin, cout, k, _ = spec
                fan_in = cin * k * k
                shape = (cout, cin, k, k)
            elif spec[0] == "linear":
                fan_in = spec[1]
                shape = (spec[2], spec[1])
            else:
                continue
            w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            b = np.zeros(shape[0])
            params.append((w.astype(dtype), b.astype(dtype)))
        return params


def _mlp(name, *sizes):
    layers = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(("linear", a, b))
        if i < len(sizes) - 2:
            layers.append(("relu",))
    return Workload(name, tuple(layers), (sizes[0],))


WORKLOADS = {
    w.name: w
    for w in (
        _mlp("mlp-512-256", 784, 512, 256, 10),
        _mlp("mlp-128", 784, 128, 10),
        Workload(
            "cnn",
            (
                ("conv", 1, 32, 5, 0),
                ("relu",),
                ("pool", 2),
                ("conv", 32, 64, 5, 0),
                ("relu",),
                ("pool", 2),
                ("flatten",),
                ("linear", 1024, 128),
                ("relu",),
                ("linear", 128, 10),
            ),
            (1, 28, 28),
        ),
        # LeNet-5 with ReLU and max-pooling, as examples/mnist_cnn.py --arch lenet builds it.
        Workload(
            "lenet5",
            (
                ("conv", 1, 6, 5, 2),
                ("relu",),
                ("pool", 2),
                ("conv", 6, 16, 5, 0),
                ("relu",),
                ("pool", 2),
                ("flatten",),
                ("linear", 400, 120),
                ("relu",),
                ("linear", 120, 84),
                ("relu",),
                ("linear", 84, 10),
            ),
            (1, 28, 28),
        ),
    )
}

# The rows of the table: (workload, what is measured, anchor PyTorch, anchor NumPy, target)
# Epoch rows are seconds (lower is better); "infer:batch1" is microseconds per call;
# "infer:batch1000" is samples per second (higher is better; the target is 2x PyTorch).
TARGETS = (
    ("mlp-512-256", "epoch", 1.40, 0.97, 0.45),
    ("mlp-128", "epoch", 0.30, 0.22, 0.10),
    ("cnn", "epoch", 13.9, 18.6, 4.5),
    ("lenet5", "epoch", 4.2, 10.5, 0.8),
    ("mlp-512-256", "infer:batch1", 49e-6, 44e-6, 15e-6),
    ("mlp-512-256", "infer:batch1000", 152e3, 176e3, "2x pytorch"),
)


def inputs_for(workload, x_flat):
    """The images as this workload takes them: (N, 784) for MLPs, (N, 1, 28, 28) for CNNs."""
    if workload.is_cnn:
        return x_flat.reshape(-1, *workload.input_shape)
    return x_flat.reshape(len(x_flat), -1)


def epoch_batches(n, batch_size=BATCH, seed=SEED):
    """One epoch's shuffled index batches (the last partial batch kept), the same for every
    implementation so they do the same work."""
    order = np.random.default_rng(seed).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]
