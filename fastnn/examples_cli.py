"""What examples/mnist_mlp.py and examples/mnist_cnn.py share: the command line, the run
(train, test, time inference) and the reports (--json, --plot, --save, --profile).

It lives in the package, not beside the scripts, so the scripts stay a page long (they only
build their model) and the tests reach it from the installed package.

    parser = examples_cli.parser(__doc__, epochs=10, lr=0.05)
    args = parser.parse_args()
    examples_cli.run(args, build_model, "mlp 784-512-256-10")
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np

from . import _random, backends, datasets, fileformat, optim
from ._threads import get_num_threads, set_num_threads
from .trainer import NonFiniteLossError, Trainer

# Inference is timed at this batch size (the size the benchmarks report).
INFER_BATCH_SIZE = 1000
OPTIMIZERS = ("sgd", "adam")
DEFAULT_LR = {"sgd": 0.05, "adam": 1e-3}
# Exit status for arguments this machine cannot run (no GPU, an unwritable path), as argparse
# uses for usage errors.
EXIT_USAGE = 2
JSON_KEYS = (
    "backend",
    "model",
    "epochs",
    "test_accuracy",
    "epoch_times_s",
    "train_samples_per_s",
    "infer_samples_per_s",
)


# ---- the command line ---------------------------------------------------------------------------


def _number(parse, accepts, expected):
    """An argparse type: `parse(text)` that `accepts`, else "expected <expected>, got '...'"."""

    def convert(text):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return convert


positive_int = _number(int, lambda v: v >= 1, "a positive integer")
positive_float = _number(float, lambda v: math.isfinite(v) and v > 0, "a positive number")
nonnegative_float = _number(float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")
# a validation fraction; 0 means no validation set
fraction = _number(float, lambda v: 0 <= v < 1, "a fraction in [0, 1)")


def int_list(text):
    """'512,256' -> (512, 256): positive sizes separated by commas."""
    parts = [p.strip() for p in text.split(",")]
    if not parts or any(not p for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected sizes separated by commas such as 512,256, got {text!r}"
        )
    return tuple(positive_int(p) for p in parts)


def parser(
    doc,
    *,
    epochs,
    sgd_lr=DEFAULT_LR["sgd"],
    weight_decay=0.0,
    batch_size=128,
    val_split=0.1,
    optimizer="sgd",
):
    """An ArgumentParser with the flags both examples take, with the script's defaults; a
    script adds its own flags."""
    lr_defaults = {**DEFAULT_LR, "sgd": sgd_lr}
    p = argparse.ArgumentParser(
        description=doc.strip(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--backend",
        default="cpu",
        choices=backends.names(),
        help="where to train (default: %(default)s)",
    )
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=epochs,
        help="passes over the training set (default: %(default)s)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=batch_size,
        help="samples per step (default: %(default)s)",
    )
    p.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="peak learning rate; cosine decay to 0 over the run (default: "
        + ", ".join(f"{k} {v}" for k, v in lr_defaults.items())
        + ")",
    )
    p.add_argument(
        "--optimizer",
        default=optimizer,
        choices=OPTIMIZERS,
        help="sgd: momentum 0.9, Nesterov; adam: betas 0.9, 0.999 (default: %(default)s)",
    )
    p.add_argument(
        "--weight-decay",
        type=nonnegative_float,
        default=weight_decay,
        metavar="L2",
        help="L2 penalty added to the gradients (default: %(default)s)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="one seed for initialization, split and shuffling (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="threads for fastnn's kernels and the BLAS (default: OpenMP's, "
        "which honours OMP_NUM_THREADS)",
    )
    p.add_argument(
        "--val-split",
        type=fraction,
        default=val_split,
        metavar="FRACTION",
        help="training images held out for validation, 0 for none (default: %(default)s)",
    )
    p.add_argument(
        "--limit",
        type=positive_int,
        default=None,
        metavar="N",
        help="use only the first N training and N test images (quick checks)",
    )
    p.add_argument("--save", metavar="PATH", help="save the trained model (.npz)")
    p.add_argument(
        "--plot",
        metavar="DIR",
        help="write PNGs to DIR: test digits with predictions, loss and accuracy "
        "curves, confusion matrix, most confident mistakes (needs matplotlib: "
        "pip install matplotlib)",
    )
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument(
        "--profile",
        action="store_true",
        help="before training, time each layer's forward and backward pass and print its GFLOP/s",
    )
    p.set_defaults(lr_defaults=lr_defaults)
    return p


def one_line(text):
    """Messages from deep down (CuPy, CUDA) can span lines; the examples promise one."""
    return " ".join(str(text).split())


def fail(message, status):
    print(
        f"{os.path.basename(sys.argv[0]) or 'fastnn'}: error: {one_line(message)}", file=sys.stderr
    )
    raise SystemExit(status)


def check_output_paths(args):
    """Refuse output paths that cannot be written before training, not after it."""
    for flag, path in (("--save", args.save), ("--json", args.json)):
        if path is None:
            continue
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path) or not os.path.isdir(directory):
            fail(f"{flag} {path}: expected a file path in an existing directory", EXIT_USAGE)
    if args.plot is not None and os.path.exists(args.plot) and not os.path.isdir(args.plot):
        fail(f"--plot {args.plot}: expected a directory, found a file", EXIT_USAGE)


def get_backend(name):
    """The backend, or exit with status 2 and one line saying why it cannot run here."""
    try:
        return backends.get(name)
    except backends.BackendUnavailable as exc:
        fail(exc, EXIT_USAGE)


def make_optimizer(name, lr, epochs, weight_decay=0.0):
    """SGD (momentum 0.9, Nesterov) or Adam, with the rate following a cosine to 0 over the run."""
    lr = DEFAULT_LR[name] if lr is None else lr
    schedule = optim.CosineLR(epochs)
    if name == "sgd":
        return optim.SGD(
            lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay, schedule=schedule
        )
    return optim.Adam(lr=lr, weight_decay=weight_decay, schedule=schedule)


def describe_optimizer(optimizer):
    """One short line, e.g. 'SGD lr 0.1, Nesterov momentum 0.9, weight decay 0.0005, cosine
    decay to 0 over 10 epochs' (the repr is a 170-column line)."""
    config = optimizer.config()
    parts = [f"{type(optimizer).__name__} lr {config['lr']:g}"]
    if "momentum" in config and config["momentum"]:
        parts.append(
            f"{'Nesterov ' if config.get('nesterov') else ''}momentum {config['momentum']:g}"
        )
    if "betas" in config:
        parts.append(f"betas {'/'.join(format(b, 'g') for b in config['betas'])}")
    if config.get("weight_decay"):
        parts.append(f"weight decay {config['weight_decay']:g}")
    schedule = optimizer.schedule
    if isinstance(schedule, optim.CosineLR):
        epochs = f"{schedule.epochs:g} epoch{'s' if schedule.epochs != 1 else ''}"
        warmup = f"{schedule.warmup:g}-epoch warm-up, " if schedule.warmup else ""
        floor = f"{schedule.min_factor:g}x" if schedule.min_factor else "0"
        parts.append(f"{warmup}cosine decay to {floor} over {epochs}")
    elif schedule is not None:
        parts.append(repr(schedule))
    return ", ".join(parts)


# ---- the run --------------------------------------------------------------------------------------


def load_mnist(limit=None):
    (x_train, y_train), (x_test, y_test) = datasets.mnist()
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]
        x_test, y_test = x_test[:limit], y_test[:limit]
    return (x_train, y_train), (x_test, y_test)


def time_inference(model, x, batch_size=INFER_BATCH_SIZE):
    """(predicted classes, samples per second) over x at `batch_size`, after one warm-up batch
    (workspaces, thread start-up) that is not timed."""
    model.predict(x[:batch_size], batch_size)
    start = time.perf_counter()
    predictions = model.predict(x, batch_size)
    elapsed = time.perf_counter() - start
    return predictions, len(x) / elapsed


def run_profile(model, x, y, args, optimizer, epoch_size):
    """Print fastnn.profile's per-layer table; the weights it trains are put back after."""
    try:
        from .profiler import profile
    except ImportError:
        print("--profile: this build of fastnn has no profiler (fastnn.profiler); skipped")
        return None
    return profile(
        model,
        x,
        y,
        backend=args.backend,
        batch_size=args.batch_size,
        optimizer=optimizer,
        epoch_size=epoch_size,
    )


def run(args, build_model, model_name, recipe=None):
    """Train `build_model()` on MNIST as `args` say; print the epochs and the test accuracy,
    then write what --save, --json and --plot ask for. Returns the results dict (JSON_KEYS).
    recipe(args) -> (optimizer, loss, extra fit keywords) replaces the flags' optimizer, the
    plain cross-entropy and the plain batches (e.g. augment=) when given."""
    started = time.perf_counter()
    if args.threads is not None:
        set_num_threads(args.threads)
    check_output_paths(args)
    backend = get_backend(args.backend)
    if args.plot:
        from . import plots  # only imports matplotlib when asked to draw

        if plots.missing_reason():
            print(f"--plot: {plots.missing_reason()}; no plots will be written")
    (x_train, y_train), (x_test, y_test) = load_mnist(args.limit)
    n_val = round(len(x_train) * args.val_split) if args.val_split else 0
    if args.val_split and not 1 <= n_val < len(x_train):
        fail(
            f"--val-split {args.val_split} of {len(x_train)} images leaves {n_val} for "
            f"validation and {len(x_train) - n_val} for training; both need one (0 for no "
            f"validation)",
            EXIT_USAGE,
        )

    _random.seed(args.seed)
    model = build_model()
    lr = args.lr_defaults[args.optimizer] if args.lr is None else args.lr
    optimizer = make_optimizer(args.optimizer, lr, args.epochs, args.weight_decay)
    loss, fit_extra = "cross_entropy", {}
    if recipe is not None:
        optimizer, loss, fit_extra = recipe(args)
    trainer = Trainer(model, optimizer, loss=loss, backend=backend)
    threads = get_num_threads()
    print(
        f"{model_name} on {backend.name}, {threads} thread{'s' if threads != 1 else ''}, "
        f"batch {args.batch_size}, seed {args.seed}"
    )
    print(describe_optimizer(optimizer))
    if recipe is not None:  # what the recipe adds to the optimizer
        print(f"loss {loss!r}" + "".join(f", {k} {v!r}" for k, v in fit_extra.items()))
    print(
        f"MNIST: {len(x_train) - n_val:,} training, {n_val:,} validation, "
        f"{len(x_test):,} test images"
    )
    model.summary(input_shape=x_train.shape[1:])
    if args.profile:
        run_profile(model, x_train, y_train, args, optimizer, len(x_train) - n_val)

    try:
        history = trainer.fit(
            x_train,
            y_train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_split=args.val_split or None,
            **fit_extra,
        )
    except NonFiniteLossError as exc:
        fail(f"{exc}; try a smaller --lr", 1)

    predictions, infer_rate = time_inference(model, x_test)
    correct = int(np.count_nonzero(predictions == y_test))
    accuracy = correct / len(y_test)
    epoch_times = [float(t) for t in history["epoch_time"]]
    trained = len(epoch_times) * (len(x_train) - n_val)
    result = {
        "backend": backend.name,
        "model": model_name,
        "epochs": len(epoch_times),
        "test_accuracy": accuracy,
        "epoch_times_s": epoch_times,
        "train_samples_per_s": trained / sum(epoch_times) if epoch_times else 0.0,
        "infer_samples_per_s": infer_rate,
    }
    print(
        f"test accuracy {100 * accuracy:.2f}% ({correct:,}/{len(y_test):,})  "
        f"total {time.perf_counter() - started:.1f} s"
    )
    print(
        f"training {sum(epoch_times):.1f} s ({result['train_samples_per_s']:,.0f} samples/s)"
        f"  inference {infer_rate:,.0f} samples/s (batch {INFER_BATCH_SIZE})"
    )

    if args.save:
        model.save(args.save)
        print(f"model saved to {args.save}")
    if args.json:
        write_json(args.json, result)
        print(f"results written to {args.json}")
    if args.plot:
        from . import plots

        if not plots.missing_reason():
            paths = plots.write_all(
                args.plot,
                model_name.split()[0],
                x_test,
                y_test,
                model.predict_proba(x_test),
                history,
            )
            names = ", ".join(os.path.basename(path) for path in paths)
            print(f"plots written to {args.plot}:\n  {names}")
    return result


def write_json(path, result):
    def write(f):
        f.write(json.dumps({k: result[k] for k in JSON_KEYS}, indent=2).encode() + b"\n")

    fileformat.atomic_write(path, write)
