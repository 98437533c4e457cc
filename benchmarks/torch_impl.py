"""The workloads through PyTorch (CPU, 2 threads), for the side-by-side column.

torch is never a dependency of fastnn: `available()` says whether it can be imported here, and
the benchmarks skip the PyTorch column when it cannot.
"""

import numpy as np

THREADS = 2  # compare.py --threads changes it

try:
    import torch
except ImportError as exc:  # pragma: no cover - depends on the environment
    torch = None
    _why = f"torch is not importable: {exc}"
else:
    _why = None


def available():
    return torch is not None


def why_unavailable():
    return _why


def version():
    return torch.__version__ if torch is not None else None


def describe():
    """e.g. "2.13.0+cpu, 2 threads, CPU capability AVX2, BLAS mkl" (None without torch)."""
    if torch is None:
        return None
    parts = [torch.__version__, f"{torch.get_num_threads()} threads"]
    try:
        parts.append(f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    except AttributeError:
        pass
    for line in torch.__config__.show().splitlines():
        line = line.strip()
        if line.startswith("BLAS_INFO=") or "BLAS_INFO=" in line:
            parts.append("BLAS " + line.split("BLAS_INFO=")[1].split(",")[0])
            break
    return ", ".join(parts)


def setup_threads(n=None):
    torch.set_num_threads(THREADS if n is None else n)


class Network:
    """A workload (see workloads.py) as a torch.nn.Sequential trained with torch.optim.SGD."""

    def __init__(self, workload, params, lr, momentum, threads=None):
        setup_threads(threads)
        nn = torch.nn
        weights = iter(params)
        modules = []
        for spec in workload.layers:
            kind = spec[0]
            if kind == "conv":
                _, cin, cout, k, pad = spec
                m = nn.Conv2d(cin, cout, k, padding=pad)
            elif kind == "linear":
                m = nn.Linear(spec[1], spec[2])
            elif kind == "pool":
                m = nn.MaxPool2d(spec[1])
            elif kind == "relu":
                m = nn.ReLU()
            else:
                m = nn.Flatten()
            if kind in ("conv", "linear"):
                w, b = next(weights)
                with torch.no_grad():
                    m.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
                    m.bias.copy_(torch.from_numpy(np.ascontiguousarray(b)))
            modules.append(m)
        self.model = nn.Sequential(*modules)
        self.loss_fn = nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=momentum)

    @staticmethod
    def tensor(a):
        """A numpy array as a torch tensor (sharing memory), labels as int64 as torch wants."""
        a = np.ascontiguousarray(a)
        if a.dtype.kind in "iu":
            a = a.astype(np.int64, copy=False)
        return torch.from_numpy(a)

    def train_step(self, x, y):
        """One step on tensors made with `tensor` (conversion is not part of the step)."""
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss

    def predict(self, x):
        with torch.inference_mode():
            return self.model(x).argmax(dim=1)

    def weights(self):
        out = []
        for m in self.model:
            if hasattr(m, "weight"):
                out.append((m.weight.detach().numpy(), m.bias.detach().numpy()))
        return out
