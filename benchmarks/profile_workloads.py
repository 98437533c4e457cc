"""fastnn.profile for each workload of the issue's table: where a training step's time goes.

    python benchmarks/profile_workloads.py                     # every workload, cpu backend
    python benchmarks/profile_workloads.py --workloads cnn --steps 50 --backend numpy
    python benchmarks/profile_workloads.py --markdown

The issue asks, for every target missed, for a profile of where the time goes: this prints it
(one table per workload, medians over --steps steps of batch 128, epoch estimate for 60k).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

import fastnn  # noqa: E402
import fastnn_impl  # noqa: E402
import workloads as W  # noqa: E402
from fastnn import optim  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default=",".join(W.WORKLOADS))
    p.add_argument("--backend", default="cpu")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--markdown", action="store_true", help="wrap each table in a code block")
    args = p.parse_args(argv)
    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    bad = [w for w in names if w not in W.WORKLOADS]
    if bad:
        p.error(f"--workloads: unknown {bad}; expected some of {list(W.WORKLOADS)}")
    (x, y), _ = fastnn.datasets.mnist()
    print(f"load average {os.getloadavg()[0]:.2f}; fastnn threads {fastnn.get_num_threads()}")
    for name in names:
        workload = W.WORKLOADS[name]
        fastnn.seed(0)
        model = fastnn_impl.build_model(workload)
        print(f"\n{name}" + ("\n```" if args.markdown else ""))
        images = x.reshape(len(x), *workload.input_shape)
        fastnn.profile(
            model,
            images,
            y.astype(np.int64),
            backend=args.backend,
            batch_size=W.BATCH,
            steps=args.steps,
            optimizer=optim.SGD(lr=W.LR, momentum=W.MOMENTUM),
        )
        if args.markdown:
            print("```")


if __name__ == "__main__":
    main()
