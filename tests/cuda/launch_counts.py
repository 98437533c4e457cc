"""Kernel launches per training step and synchronizations per epoch of the cuda backend,
counted by the CuPy stand-in (fakecupy.py) on the benchmark workloads (MLP, CNN, LeNet-5).

    PYTHONPATH=$PWD python tests/cuda/launch_counts.py [--epoch-steps 469]

A step's launches do not depend on the batch size, so they are counted on a few tiny batches:
the difference between fits of S and 2S steps, divided by S, is exactly what one more step of
Trainer.fit costs (forward, loss, backward, optimizer, running loss and accuracy). Syncs per
epoch depend on the number of steps only (not on the model or the batch size), so they are
counted on an epoch of `--epoch-steps` steps (469: MNIST's 60,000 samples at batch size 128)
of batches of one sample, without validation.
"""

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

WORKLOADS = {
    "mlp": lambda nn: nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 512),
        nn.ReLU(),
        nn.Linear(512, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    ),
    "cnn": lambda nn: nn.Sequential(
        nn.Conv2d(1, 32, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(1024, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    ),
    "lenet5": lambda nn: nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(400, 120),
        nn.ReLU(),
        nn.Linear(120, 84),
        nn.ReLU(),
        nn.Linear(84, 10),
    ),
}
OPTIMIZERS = {
    "sgd": lambda optim: optim.SGD(lr=0.01, momentum=0.9),
    "adam": lambda optim: optim.Adam(lr=1e-3),
}


def _fit(stats, workload, optimizer, samples, batch_size):
    import fastnn
    from fastnn import nn, optim

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(samples, 1, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=samples)
    fastnn.seed(0)
    trainer = fastnn.Trainer(WORKLOADS[workload](nn), OPTIMIZERS[optimizer](optim), backend="cuda")
    stats.reset()
    trainer.fit(x, y, epochs=1, batch_size=batch_size, verbose=0)
    return stats.snapshot()


def launches_per_step(stats, workload, optimizer, steps=2, batch_size=2):
    """Launches one more training step adds to a fit (exact: a difference of two counts)."""
    one = _fit(stats, workload, optimizer, steps * batch_size, batch_size)
    two = _fit(stats, workload, optimizer, 2 * steps * batch_size, batch_size)
    per_step = (two["launches"] - one["launches"]) / steps
    return per_step, (two["syncs"] - one["syncs"]) / steps


def syncs_per_epoch(stats, workload, optimizer, steps):
    return _fit(stats, workload, optimizer, steps, 1)["syncs"]


def install(build_dir):
    """Build the harness, install the stand-in as `cupy`; returns its stats."""

    def load(name, path):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    host_harness = load("fastnn_tests_host_harness", HERE / "harness" / "host_harness.py")
    fakecupy = load("fastnn_tests_fakecupy", HERE / "fakecupy.py")
    from fastnn import backends
    from fastnn.backends.cuda import sources

    library = host_harness.HostLibrary(host_harness.build(build_dir))
    fakecupy.install(library, {f: sources.source(f) for f in sources.FAMILIES})
    sys.modules["cupy"] = fakecupy
    backend = backends.get("cuda")
    backend.threads, backend.max_blocks = 32, 2
    return fakecupy.stats


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epoch-steps", type=int, default=469)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as build_dir:
        stats = install(build_dir)
        print(
            f"{'workload':<8} {'optimizer':<9} {'launches/step':>13} {'syncs/step':>10} "
            f"{'syncs/epoch':>11}"
        )
        for workload in WORKLOADS:
            for optimizer in OPTIMIZERS:
                per_step, step_syncs = launches_per_step(stats, workload, optimizer)
                epoch = (
                    syncs_per_epoch(stats, workload, optimizer, args.epoch_steps)
                    if workload == "mlp"
                    else ""
                )
                print(
                    f"{workload:<8} {optimizer:<9} {per_step:>13g} {step_syncs:>10g} {epoch:>11}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
