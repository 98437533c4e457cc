"""scikit-learn's MLPClassifier and fastnn's drop-in, the same MNIST script, one run.

    python benchmarks/sklearn_vs_fastnn.py                 # 784-256-10 ReLU, Adam, 10 epochs
    python benchmarks/sklearn_vs_fastnn.py --hidden 512,256 --epochs 5 --threads 1 --markdown

Both estimators get the same parameters (scikit-learn's names and defaults: Adam, lr 0.001,
batch 200, alpha 1e-4; early stopping off; tol=0 so both run every epoch) and the same data:
the 60k MNIST training images as flattened rows / 255, scored on the 10k test images. The
runs alternate (scikit-learn, fastnn, scikit-learn, ...) so background load hits both alike;
the table shows the median time of each and the accuracy (the same every run for one seed).
Needs scikit-learn (pip install ".[sklearn]").
"""

import argparse
import os
import statistics
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.neural_network import MLPClassifier as SklearnMLP

import fastnn
from fastnn.sklearn import MLPClassifier as FastnnMLP


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", default="256", help="hidden layer sizes (256)")
    parser.add_argument("--epochs", type=int, default=10, help="max_iter (10)")
    parser.add_argument("--runs", type=int, default=1, help="alternating runs of each (1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for fastnn and for the BLAS under both (default: OpenMP's)",
    )
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = parser.parse_args()
    hidden = tuple(int(h) for h in args.hidden.split(","))
    if args.threads is not None:  # fastnn's kernels and, through threadpoolctl, NumPy's BLAS
        fastnn.set_num_threads(args.threads)

    (x_train, y_train), (x_test, y_test) = fastnn.datasets.mnist()
    x_train = x_train.reshape(len(x_train), -1) / 255.0  # what scikit-learn users feed it
    x_test = x_test.reshape(len(x_test), -1) / 255.0
    params = {
        "hidden_layer_sizes": hidden,
        "max_iter": args.epochs,
        "tol": 0.0,
        "random_state": args.seed,
    }
    contenders = {
        "scikit-learn MLPClassifier": lambda: SklearnMLP(**params),
        "fastnn.sklearn.MLPClassifier": lambda: FastnnMLP(**params),
    }
    results = {name: {"fit": [], "predict": []} for name in contenders}
    for _ in range(args.runs):
        for name, make in contenders.items():
            clf = make()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                start = time.perf_counter()
                clf.fit(x_train, y_train)
                results[name]["fit"].append(time.perf_counter() - start)
            start = time.perf_counter()
            predicted = clf.predict(x_test)
            results[name]["predict"].append(time.perf_counter() - start)
            results[name]["accuracy"] = float(np.mean(predicted == y_test))
            results[name]["epochs"] = clf.n_iter_
            print(
                f"{name}: fit {results[name]['fit'][-1]:.1f} s, accuracy "
                f"{results[name]['accuracy']:.4f}",
                flush=True,
            )
    load = os.getloadavg()[0]
    print(
        f"MNIST 60k/10k, MLP 784-{'-'.join(map(str, hidden))}-10 ReLU, Adam lr 0.001, "
        f"batch 200, {args.epochs} epochs, seed {args.seed}; medians of {args.runs} "
        f"alternating run(s); {fastnn.get_num_threads()} thread(s), "
        f"load average {load:.1f} at the end"
    )
    rows = [("estimator", "test accuracy", "fit time", "predict 10k", "fit speed-up")]
    base = statistics.median(results["scikit-learn MLPClassifier"]["fit"])
    for name, r in results.items():
        fit, predict = statistics.median(r["fit"]), statistics.median(r["predict"])
        rows.append(
            (
                name,
                f"{100 * r['accuracy']:.2f}%",
                f"{fit:.1f} s",
                f"{predict * 1000:.0f} ms",
                f"{base / fit:.1f}x",
            )
        )
    if args.markdown:
        print("| " + " | ".join(rows[0]) + " |")
        print("|" + " --- |" * len(rows[0]))
        for row in rows[1:]:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
        for row in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))


if __name__ == "__main__":
    main()
