"""Run examples/mnist_speedrun.py (fastnn) and benchmarks/speedrun_torch.py (PyTorch, from a
separate venv) for the given seeds, interleaved, each as a fresh process under `nice`, and
print one line per run with its accuracy, wall time, CPU time (all threads) and the load average
at its start, then the summary (mean and minimum accuracy, median wall and CPU time, the ratios
of the medians). On a busy machine the wall time measures the load; the CPU time much less so.

    python benchmarks/speedrun_compare.py --seeds 0-9 --torch-python /work/venv-torch/bin/python \
        --json speedrun.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def seeds(text):
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def run(command, env):
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    load = os.getloadavg()[0]
    subprocess.run(
        [*command, "--json", path], check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL
    )
    with open(path) as f:
        result = json.load(f)
    os.unlink(path)
    result["load_at_start"] = load
    return result


def main():
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--seeds", type=seeds, default=seeds("0-9"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--torch-python",
        default=None,
        help="python of a venv with torch; without it only fastnn runs",
    )
    p.add_argument(
        "--torch-seeds",
        type=seeds,
        default=None,
        help="seeds for the PyTorch runs (default: the first seed only)",
    )
    p.add_argument("--nice", type=int, default=5)
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args()
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS=str(args.threads))
    nice = ["nice", "-n", str(args.nice)]
    torch_seeds = args.torch_seeds if args.torch_seeds is not None else args.seeds[:1]
    results = {"fastnn": [], "torch": []}
    for seed in args.seeds:
        r = run(
            [
                *nice,
                sys.executable,
                "examples/mnist_speedrun.py",
                "--seed",
                str(seed),
                "--threads",
                str(args.threads),
            ],
            env,
        )
        results["fastnn"].append(r)
        print(
            f"fastnn seed {seed}: {100 * r['test_accuracy']:.2f}%  wall {r['wall_s']:.2f} s"
            f"  CPU {r['cpu_s']:.2f} s  load {r['load_at_start']:.1f}",
            flush=True,
        )
        if args.torch_python and seed in torch_seeds:
            r = run(
                [
                    *nice,
                    args.torch_python,
                    "benchmarks/speedrun_torch.py",
                    "--seed",
                    str(seed),
                    "--threads",
                    str(args.threads),
                ],
                env,
            )
            results["torch"].append(r)
            print(
                f"torch  seed {seed}: {100 * r['test_accuracy']:.2f}%  wall {r['wall_s']:.2f} s"
                f"  CPU {r['cpu_s']:.2f} s  load {r['load_at_start']:.1f}",
                flush=True,
            )
    for name, runs in results.items():
        if runs:
            accs = [r["test_accuracy"] for r in runs]
            walls = [r["wall_s"] for r in runs]
            cpus = [r["cpu_s"] for r in runs]
            print(
                f"{name}: {len(runs)} runs, accuracy mean {100 * statistics.mean(accs):.2f}% "
                f"min {100 * min(accs):.2f}%, wall median {statistics.median(walls):.2f} s, "
                f"CPU median {statistics.median(cpus):.2f} s"
            )
    if results["torch"]:
        for key, what in (("wall_s", "wall"), ("cpu_s", "CPU")):
            ratio = statistics.median(r[key] for r in results["torch"]) / statistics.median(
                r[key] for r in results["fastnn"]
            )
            print(f"PyTorch / fastnn median {what} time: {ratio:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
