"""The example scripts, run as a user runs them: subprocesses of this interpreter, from a temp
directory so that `import fastnn` finds the installed package, on a few hundred images
(--limit) for one or two epochs."""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastnn
from fastnn import examples_cli, plots

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MLP = EXAMPLES / "mnist_mlp.py"
CNN = EXAMPLES / "mnist_cnn.py"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HAS_MATPLOTLIB = plots.missing_reason() is None

pytestmark = pytest.mark.skipif(not MLP.exists(), reason="examples/ is not beside tests/")


def run(script, *args, cwd, block_matplotlib=False, timeout=300):
    """Run an example; return the CompletedProcess (text)."""
    argv = [str(script), *map(str, args)]
    if block_matplotlib:
        # the script as `python script ...` would run it, with `import matplotlib` failing
        # (PYTHONPATH stands in for the script's directory that `python script` puts first)
        code = (
            "import runpy, sys; sys.modules['matplotlib'] = None; "
            f"sys.argv = {argv!r}; runpy.run_path({str(script)!r}, run_name='__main__')"
        )
        cmd = [sys.executable, "-c", code]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(script.parent), env.get("PYTHONPATH")])
        )
    else:
        cmd, env = [sys.executable, *argv], None
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def epoch_lines(stdout):
    return [line for line in stdout.splitlines() if line.startswith("epoch ")]


def load_script(path):
    spec = importlib.util.spec_from_file_location(f"example_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mlp_short_run_reports_saves_and_writes_json(tmp_path):
    out = ok(
        run(
            MLP,
            "--limit",
            2000,
            "--epochs",
            2,
            "--hidden",
            "128,64",
            "--threads",
            1,
            "--json",
            "r.json",
            "--save",
            "m.npz",
            cwd=tmp_path,
        )
    )
    lines = epoch_lines(out)
    assert [line.split()[1] for line in lines] == ["1/2", "2/2"]
    for line in lines:
        for field in ("loss", "acc", "val_acc", " s ", "samples/s"):
            assert field in line, line
    assert "mlp 784-128-64-10 on cpu, 1 thread, batch 128, seed 0" in out
    assert "1,800 training, 200 validation, 2,000 test images" in out

    result = json.loads((tmp_path / "r.json").read_text())
    assert tuple(result) == examples_cli.JSON_KEYS
    assert result["backend"] == "cpu" and result["model"] == "mlp 784-128-64-10"
    assert result["epochs"] == 2 and len(result["epoch_times_s"]) == 2
    assert all(t > 0 for t in result["epoch_times_s"])
    assert result["train_samples_per_s"] > 0 and result["infer_samples_per_s"] > 0
    # 1,800 images, 2 epochs: far above chance (10%), and the line prints the same figure
    assert 0.6 < result["test_accuracy"] <= 1.0
    assert f"test accuracy {100 * result['test_accuracy']:.2f}%" in out

    # the saved model is the one that was tested
    (_, _), (x_test, y_test) = fastnn.datasets.mnist()
    model = fastnn.load(tmp_path / "m.npz")
    accuracy = np.mean(model.predict(x_test[:2000]) == y_test[:2000])
    assert accuracy == pytest.approx(result["test_accuracy"], abs=1e-12)


@pytest.mark.parametrize(
    "arch, model",
    [("cnn", "cnn 32c5-p2-64c5-p2-128-10"), ("lenet", "lenet5 6c5p2-p2-16c5-p2-120-84-10")],
)
def test_cnn_one_short_epoch(tmp_path, arch, model):
    out = ok(
        run(
            CNN,
            "--arch",
            arch,
            "--limit",
            300,
            "--epochs",
            1,
            "--batch-size",
            50,
            "--val-split",
            0,
            "--json",
            "r.json",
            cwd=tmp_path,
        )
    )
    lines = epoch_lines(out)
    assert len(lines) == 1 and lines[0].startswith("epoch 1/1") and "val_acc" not in lines[0]
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["model"] == model and result["epochs"] == 1
    assert 0.0 <= result["test_accuracy"] <= 1.0
    assert "Conv2d(1, " in out  # the summary


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="matplotlib is not installed")
def test_plot_writes_the_four_pngs(tmp_path):
    out = ok(
        run(MLP, "--limit", 500, "--epochs", 1, "--hidden", 32, "--plot", "figs", cwd=tmp_path)
    )
    written = sorted(p.name for p in (tmp_path / "figs").iterdir())
    assert written == sorted(f"mlp_{name}.png" for name in plots.PLOT_NAMES)
    for name in written:
        data = (tmp_path / "figs" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 2000
    assert "plots written" in out


def test_plot_without_matplotlib_says_so_in_one_line(tmp_path):
    result = run(
        MLP,
        "--limit",
        300,
        "--epochs",
        1,
        "--hidden",
        16,
        "--plot",
        "figs",
        cwd=tmp_path,
        block_matplotlib=True,
    )
    out = ok(result)
    mentions = [
        line for line in out.splitlines() + result.stderr.splitlines() if "matplotlib" in line
    ]
    assert len(mentions) == 1 and "pip install" in mentions[0]
    assert "test accuracy" in out  # the run itself goes on
    assert not (tmp_path / "figs").exists() or not any((tmp_path / "figs").iterdir())


@pytest.mark.skipif(
    bool(fastnn.backends.available()["cuda"]), reason="a usable CUDA device is present"
)
@pytest.mark.parametrize("script", [MLP, CNN], ids=["mlp", "cnn"])
def test_cuda_unavailable_exits_2_with_one_line(tmp_path, script):
    result = run(script, "--backend", "cuda", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""  # nothing was trained
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cuda" in lines[0] and "Traceback" not in result.stderr
    reason = fastnn.backends.available()["cuda"].reason
    assert examples_cli.one_line(reason) in lines[0]


def test_profile_flag(tmp_path):
    out = ok(
        run(
            MLP,
            "--limit",
            600,
            "--epochs",
            1,
            "--hidden",
            32,
            "--batch-size",
            25,
            "--profile",
            cwd=tmp_path,
        )
    )
    if importlib.util.find_spec("fastnn.profiler") is None:
        assert "--profile: this build of fastnn has no profiler" in out
    else:
        assert "GFLOP/s" in out and "Linear(784, 32)" in out
    assert len(epoch_lines(out)) == 1


@pytest.mark.parametrize(
    "script, args, complaint",
    [
        (MLP, ["--epochs", "0"], "--epochs"),
        (MLP, ["--batch-size", "-3"], "--batch-size"),
        (MLP, ["--lr", "nan"], "--lr"),
        (MLP, ["--lr", "-0.1"], "--lr"),
        (MLP, ["--backend", "tpu"], "--backend"),
        (MLP, ["--optimizer", "rmsprop"], "--optimizer"),
        (MLP, ["--hidden", "512,,256"], "--hidden"),
        (MLP, ["--hidden", "0"], "--hidden"),
        (MLP, ["--val-split", "1"], "--val-split"),
        (MLP, ["--weight-decay", "-1"], "--weight-decay"),
        (MLP, ["--threads", "two"], "--threads"),
        (MLP, ["--bogus"], "unrecognized arguments"),
        (CNN, ["--arch", "vgg"], "--arch"),
        (CNN, ["--hidden", "64"], "unrecognized arguments"),
        (CNN, ["--limit", "0"], "--limit"),
    ],
)
def test_bad_flags_are_usage_errors(capsys, script, args, complaint):
    module = load_script(script)
    with pytest.raises(SystemExit) as exit_info:
        module.main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and complaint in err


def test_unwritable_output_fails_before_training(tmp_path):
    result = run(MLP, "--json", tmp_path / "missing" / "r.json", cwd=tmp_path)
    assert result.returncode == 2 and result.stdout == ""
    assert "--json" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_confusion_matrix_counts():
    labels = np.array([0, 1, 1, 2, 2, 2])
    predicted = np.array([0, 1, 2, 2, 2, 0])
    expected = np.array([[1, 0, 0], [0, 1, 1], [1, 0, 2]])
    np.testing.assert_array_equal(plots.confusion_matrix(labels, predicted, 3), expected)


def test_int_list():
    assert examples_cli.int_list("512,256") == (512, 256)
    assert examples_cli.int_list(" 64 ") == (64,)
    for bad in ("", "a", "1,-2", "3,"):
        with pytest.raises(argparse.ArgumentTypeError):
            examples_cli.int_list(bad)
