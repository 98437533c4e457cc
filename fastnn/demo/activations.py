"""What each hidden layer of a model computes for one image, for the page to draw.

A served model's architecture (Sequential.config()) and weights (state_dict()) are copied once
into plain NumPy arrays, and one image is run through them layer by layer, keeping the output
of every hidden Linear and Conv2d after its activation functions. The copy shares nothing with
the model that answers predictions, so any number of threads can inspect at once while the
model is in use; the model's own fused kernels never show their intermediate outputs anyway.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

_ACTIVATIONS = {
    "ReLU": lambda x: np.maximum(x, 0.0),
    "Sigmoid": lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)),
    "Tanh": np.tanh,
}
_SKIPPED = ("Dropout",)  # identity at inference


def _conv2d(x, weight, bias, stride, padding):
    """x (C, H, W), weight (O, C, kH, kW) -> (O, H', W')."""
    if padding:
        x = np.pad(x, ((0, 0), (padding, padding), (padding, padding)))
    kh, kw = weight.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("chwij,ocij->ohw", windows, weight, optimize=True) + bias[:, None, None]


def _maxpool2d(x, kernel, stride):
    windows = sliding_window_view(x, (kernel, kernel), axis=(1, 2))[:, ::stride, ::stride]
    return windows.max(axis=(3, 4))


class Inspector:
    """Runs one image through a copy of a model's weights; `supported` is False (and
    `reason` says why) for a layer type it does not know, and then it reports nothing."""

    def __init__(self, config, state):
        self.steps = []  # (kind, layer description, arrays or arguments)
        self.supported, self.reason = True, ""
        specs = config["layers"]
        first = next((s for s in specs if s["type"] not in ("Flatten",) + _SKIPPED), None)
        self.channel_axis = (
            first is not None and first["type"] == "Conv2d" and first["in_channels"] == 1
        )
        for i, spec in enumerate(specs):
            kind = spec["type"]
            if kind == "Linear":
                self.steps.append(
                    (
                        kind,
                        i,
                        (
                            state[f"{i}.weight"].astype(np.float64),
                            state[f"{i}.bias"].astype(np.float64),
                        ),
                    )
                )
            elif kind == "Conv2d":
                self.steps.append(
                    (
                        kind,
                        i,
                        (
                            state[f"{i}.weight"].astype(np.float64),
                            state[f"{i}.bias"].astype(np.float64),
                            spec.get("stride", 1),
                            spec.get("padding", 0),
                        ),
                    )
                )
            elif kind == "MaxPool2d":
                k = spec.get("kernel_size", 2)
                self.steps.append((kind, i, (k, spec.get("stride", k))))
            elif kind in _ACTIVATIONS or kind == "Flatten":
                self.steps.append((kind, i, None))
            elif kind not in _SKIPPED:
                self.supported = False
                self.reason = f"layer {i} ({kind}) is not drawn by the demo"
        self.names = [_describe(spec) for spec in specs]

    def run(self, image):
        """(logits, hidden) for one (28, 28) image: hidden is a list of {"name", "kind"
        ("dense" or "conv"), "shape", "values" (flat list)} for each Linear/Conv2d except the
        last, taken after the activation functions that follow it."""
        if not self.supported:
            return None, []
        x = np.asarray(image, np.float64)
        if self.channel_axis:
            x = x[None]
        hidden = []
        open_group = None  # the Linear/Conv2d whose output (after activations) is pending
        for kind, i, args in self.steps:
            if kind in ("Linear", "Conv2d", "MaxPool2d", "Flatten") and open_group is not None:
                hidden.append(_entry(open_group, x))
                open_group = None
            if kind == "Linear":
                weight, bias = args
                x = weight @ x.reshape(-1) + bias
                open_group = [i]
            elif kind == "Conv2d":
                x = _conv2d(x, *args)
                open_group = [i]
            elif kind == "MaxPool2d":
                x = _maxpool2d(x, *args)
            elif kind == "Flatten":
                x = x.reshape(-1)
            else:
                x = _ACTIVATIONS[kind](x)
                if open_group is not None:
                    open_group.append(i)
        # the last group is the output layer: its values are the logits, not a hidden layer
        return x.reshape(-1), [
            dict(h, name=" + ".join(self.names[j] for j in h.pop("group"))) for h in hidden
        ]


def _entry(group, x):
    return {
        "group": group,
        "kind": "conv" if x.ndim == 3 else "dense",
        "shape": list(x.shape),
        "values": np.round(x.reshape(-1), 4).tolist(),
    }


def _describe(spec):
    args = ", ".join(str(v) for k, v in spec.items() if k != "type")
    return f"{spec['type']}({args})"
