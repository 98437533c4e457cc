"""Terminal output stays within 100 columns and reads as English; the PNGs are large enough
for a high-DPI screen."""

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn
from fastnn import examples_cli, nn, optim, plots
from fastnn.trainer import History, Trainer

COLUMNS = 100
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
HAS_MATPLOTLIB = plots.missing_reason() is None


def too_wide(text):
    return [line for line in text.splitlines() if len(line) > COLUMNS]


@pytest.mark.skipif(not EXAMPLES.exists(), reason="examples/ is not beside tests/")
@pytest.mark.parametrize(
    "script, flags",
    [
        ("mnist_mlp.py", []),
        ("mnist_cnn.py", []),
        ("mnist_cnn.py", ["--arch", "lenet"]),
    ],
)
def test_examples_print_within_100_columns(tmp_path, script, flags):
    if HAS_MATPLOTLIB and script == "mnist_mlp.py":
        flags = [*flags, "--plot", "figures"]
    result = subprocess.run(
        [
            sys.executable,
            str(EXAMPLES / script),
            *flags,
            "--limit",
            "300",
            "--epochs",
            "2",
            "--batch-size",
            "100",
            "--threads",
            "1",
            "--profile",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert too_wide(out) == []
    first = out.splitlines()[0]
    assert first.endswith("on cpu, 1 thread, batch 100, seed 0"), first
    assert "threads" not in first
    assert out.splitlines()[1] == (
        "SGD lr 0.1, Nesterov momentum 0.9, weight decay 0.0005, cosine decay to 0 over 2 epochs"
        if "mlp" in script
        else "SGD lr 0.05, Nesterov momentum 0.9, weight decay 0.0005, "
        "cosine decay to 0 over 2 epochs"
    )
    assert "GFLOP/s" in out and "an epoch of 270 samples" in out  # the --profile table


def test_optimizer_lines():
    adam = optim.Adam(lr=1e-3, weight_decay=0.0, schedule=optim.CosineLR(1, warmup=0.5))
    assert examples_cli.describe_optimizer(adam) == (
        "Adam lr 0.001, betas 0.9/0.999, 0.5-epoch warm-up, cosine decay to 0 over 1 epoch"
    )
    sgd = optim.SGD(lr=0.1, schedule=optim.StepLR(3, 0.5))
    assert examples_cli.describe_optimizer(sgd) == "SGD lr 0.1, StepLR(step_size=3, gamma=0.5)"


@settings(max_examples=200, deadline=None)
@given(
    epochs=st.integers(1, 999),
    data=st.data(),
    loss=st.floats(0, 1e30),
    val_loss=st.floats(0, 1e30),
    seconds=st.floats(1e-4, 86400),
    rate=st.floats(0.01, 1e9),
    validation=st.booleans(),
)
def test_epoch_line_fits_100_columns(epochs, data, loss, val_loss, seconds, rate, validation):
    epoch = data.draw(st.integers(0, epochs - 1))
    logs = {"loss": loss, "accuracy": 1.0, "epoch_time": seconds, "samples_per_s": rate}
    if validation:
        logs.update(val_loss=val_loss, val_accuracy=0.5)
    line = Trainer.epoch_line(epoch, epochs, logs)
    assert len(line) <= COLUMNS, line
    assert line.startswith(f"epoch {epoch + 1}/{epochs}  loss ") and line.endswith(" samples/s")


def test_epoch_line_format():
    logs = {
        "loss": 0.01371,
        "accuracy": 0.99894,
        "val_loss": 0.06543,
        "val_accuracy": 0.98,
        "epoch_time": 0.594,
        "samples_per_s": 91205.3,
    }
    assert Trainer.epoch_line(9, 10, logs) == (
        "epoch 10/10  loss 0.0137 acc 0.9989  val_loss "
        "0.0654 val_acc 0.9800  0.59 s  91,205 samples/s"
    )
    logs.update(loss=64844.6, samples_per_s=2.5e6)
    assert "loss 6.5e+04 acc" in Trainer.epoch_line(0, 1, logs)
    assert "2.5M samples/s" in Trainer.epoch_line(0, 1, logs)


def test_history_repr_grammar():
    history = History()
    assert repr(history).startswith("History(0 epochs: ")
    history["loss"].append(1.0)
    assert repr(history).startswith("History(1 epoch: ")
    history["loss"].append(0.5)
    history.interrupted = True
    assert repr(history).startswith("History(2 epochs, interrupted: ")


def test_profile_table_cuts_long_layer_names():
    fastnn.seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * 14 * 14, 10),
    )
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (8, 28, 28), dtype=np.uint8), rng.integers(0, 10, 8)
    report = fastnn.profile(model, x, y, batch_size=4, steps=1, warmup=0, print_table=False)
    report.rows[0]["name"] = "Conv2d(" + "x" * 200 + ")"
    text = str(report)
    assert too_wide(text) == []
    assert "Conv2d(xxx" in text and "..." in text


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_confusion_title_uses_thousands_separators():
    labels = np.repeat(np.arange(10), 1000)
    predicted = labels.copy()
    predicted[:1234] = (predicted[:1234] + 1) % 10
    fig = plots.confusion(labels, predicted)
    assert fig.axes[0].get_title() == "confusion matrix (1,234 errors in 10,000)"
    predicted = labels.copy()
    predicted[0] = 1
    assert (
        plots.confusion(labels, predicted).axes[0].get_title()
        == "confusion matrix (1 error in 10,000)"
    )


def png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_pngs_are_high_dpi(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 40)
    proba = rng.dirichlet(np.ones(10), 40)
    history = {
        "loss": [1.0, 0.5],
        "accuracy": [0.5, 0.8],
        "val_loss": [1.1, 0.6],
        "val_accuracy": [0.4, 0.7],
    }
    paths = plots.write_all(tmp_path, "t", images, labels, proba, history)
    sizes = {Path(p).stem: png_size(p) for p in paths}
    assert sizes["t_curves"] == (8 * plots.DPI, round(3.2 * plots.DPI))
    assert plots.DPI >= 160
    for width, height in sizes.values():
        assert width >= 800 and height >= 300
