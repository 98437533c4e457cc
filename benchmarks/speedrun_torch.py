"""The speedrun anchor recipe (tuomaso/train_mnist_fast, final notebook) in PyTorch on the CPU,
for comparison with examples/mnist_speedrun.py: conv(1->24, 5x5)-maxpool2-ReLU ->
conv(24->32, 3x3)-maxpool2-ReLU -> Linear(800, 256)-ReLU -> Linear(256, 10), log-softmax + NLL;
Adam (lr 0.01, betas 0.7, 0.9), OneCycleLR without momentum cycling, batch 256, one epoch over
the 60,000 images in order, the whole dataset preloaded as tensors (normalized with MNIST's
mean 0.1307 and std 0.3081). Timed as the whole process, imports and data loading included.
Run it from a venv with torch (never a fastnn dependency):

    /work/venv-torch/bin/python benchmarks/speedrun_torch.py --seed 0 --threads 2 --json t.json

It reads MNIST from fastnn's packaged IDX files (gzip + numpy only, no fastnn import).
"""

# ruff: noqa: E402 (the clock starts before the imports, which it times)
import time

_STARTED = time.perf_counter()

import argparse
import gzip
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fastnn", "data", "mnist")


def process_wall_time():
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rpartition(")")[2].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _STARTED


def read_idx(name):
    path = next(os.path.join(DATA, f) for f in os.listdir(DATA) if f.startswith(name))
    with gzip.open(path) as f:
        raw = f.read()
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 24, 5, 1)
        self.conv2 = nn.Conv2d(24, 32, 3, 1)
        self.fc1 = nn.Linear(800, 256)
        self.fc2 = nn.Linear(256, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        return F.log_softmax(self.fc2(x), dim=1)


def tensors(images, labels):
    x = torch.from_numpy(images.astype(np.float32) / 255.0)
    x = ((x - 0.1307) / 0.3081).unsqueeze(1)
    return x, torch.from_numpy(labels.astype(np.int64))


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x_train, y_train = tensors(read_idx("train-images"), read_idx("train-labels"))
    x_test, y_test = tensors(read_idx("t10k-images"), read_idx("t10k-labels"))
    model = Net()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.7, 0.9))
    batch = 256
    steps = (len(x_train) - 1) // batch + 1
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=0.01, total_steps=steps, cycle_momentum=False
    )
    started = time.perf_counter()
    model.train()
    for i in range(steps):
        optimizer.zero_grad()
        loss = F.nll_loss(
            model(x_train[batch * i : batch * (i + 1)]), y_train[batch * i : batch * (i + 1)]
        )
        loss.backward()
        optimizer.step()
        scheduler.step()
    train_s = time.perf_counter() - started
    model.eval()
    with torch.no_grad():
        accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
    wall = process_wall_time()
    cpu = time.process_time()  # every thread's CPU seconds since the process started
    print(
        f"torch speedrun seed {args.seed}: test accuracy {100 * accuracy:.2f}%  training "
        f"{train_s:.2f} s  wall {wall:.2f} s  CPU {cpu:.2f} s ({args.threads} threads, torch "
        f"{torch.__version__})"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "framework": f"torch {torch.__version__}",
                    "seed": args.seed,
                    "threads": args.threads,
                    "test_accuracy": accuracy,
                    "train_s": train_s,
                    "wall_s": wall,
                    "cpu_s": cpu,
                },
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
