"""examples/mnist_cnn.py --arch best and examples/mnist_speedrun.py run end to end on a few
images and write their JSON (the accuracy goals are measured by full runs, not here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.skipif(
    not (EXAMPLES / "mnist_speedrun.py").exists(), reason="examples/ is not beside tests/"
)


def run(script, *args, tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env=env,
        check=False,
    )


def test_cnn_best_short_run(tmp_path):
    result = run(
        "mnist_cnn.py",
        "--arch",
        "best",
        "--limit",
        300,
        "--epochs",
        1,
        "--batch-size",
        50,
        "--json",
        tmp_path / "r.json",
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "BatchNorm2d(32)" in result.stdout and "RandomAffine" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["model"].startswith("best") and report["epochs"] == 1
    assert 0.0 <= report["test_accuracy"] <= 1.0


def test_speedrun_short_run_reports_wall_time(tmp_path):
    result = run(
        "mnist_speedrun.py",
        "--limit",
        512,
        "--seed",
        1,
        "--json",
        tmp_path / "s.json",
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "s.json").read_text())
    assert report["seed"] == 1 and report["wall_s"] > 0
    assert report["model"].startswith("speedrun") and len(report["epoch_times_s"]) == 1
    assert report["wall_s"] >= sum(report["epoch_times_s"]) and report["cpu_s"] > 0
    assert 0.0 <= report["test_accuracy"] <= 1.0
