"""What augmentation adds to a training step: the batch gather with RandomAffine against the
plain gather and against a whole training step of `examples/mnist_cnn.py --arch best`, batch
128, medians of interleaved repetitions in one process (so load affects all alike).

    python benchmarks/augment_cost.py [--threads 1] [--reps 30]
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

import fastnn
from fastnn import backends
from fastnn.augment import RandomAffine

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import mnist_cnn


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args()
    if args.threads:
        fastnn.set_num_threads(args.threads)
    (x, y), _ = fastnn.datasets.mnist()
    fastnn.seed(0)
    model = mnist_cnn.build_best()
    optimizer, loss, _ = mnist_cnn.best_recipe(argparse.Namespace(epochs=1))
    trainer = fastnn.Trainer(model, optimizer, loss=loss)
    xs = model.prepare_input(x)
    ys = y.astype(np.int64)
    cpu = backends.get("cpu")
    out = np.empty((args.batch, *xs.shape[1:]), xs.dtype)
    gather = cpu.row_gatherer(xs, out)
    augment = RandomAffine(shift=0.08, rotate=10, scale=0.08)
    rng = np.random.default_rng(0)
    times = {"plain gather": [], "gather + RandomAffine": [], "training step": []}
    for _ in range(args.reps):
        index = rng.permutation(len(xs))[: args.batch].astype(np.int64)
        t = time.perf_counter()
        gather(index)
        times["plain gather"].append(time.perf_counter() - t)
        t = time.perf_counter()
        cpu.gather_affine(xs, index, augment.matrices(args.batch, 28, 28, rng), out=out)
        times["gather + RandomAffine"].append(time.perf_counter() - t)
        t = time.perf_counter()
        trainer.train_step(out, ys[index])
        times["training step"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:24s} {1e3 * v:8.3f} ms")
    extra_cost = med["gather + RandomAffine"] - med["plain gather"]
    print(
        f"augmentation adds {1e3 * extra_cost:.3f} ms per step of batch {args.batch}: "
        f"{100 * extra_cost / med['training step']:.1f}% of a training step "
        f"({fastnn.get_num_threads()} threads, load {os.getloadavg()[0]:.1f})"
    )


if __name__ == "__main__":
    main()
