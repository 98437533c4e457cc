"""`python -m fastnn.demo`: the default model cached under XDG_CACHE_HOME, the URL printed,
Ctrl-C stops it cleanly; --model; errors as one line and status 2."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from fastnn import nn
from fastnn.demo import models


def _start(args, env):
    return subprocess.Popen(
        [sys.executable, "-m", "fastnn.demo", "--no-browser", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )


def _url(process):
    line = process.stdout.readline()
    assert "serving" in line, line + process.stderr.read()
    return line.split(" at ")[1].split()[0]


def test_cli_serves_the_cached_default_and_stops_on_ctrl_c(default_served, demo_cache):
    path = models.default_model_path()
    assert path.parent == demo_cache / "fastnn" / "demo" and path.exists()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
    mtime = path.stat().st_mtime_ns
    env = dict(os.environ, XDG_CACHE_HOME=str(demo_cache))
    process = _start([], env)
    try:
        url = _url(process)
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "api/model", timeout=30) as response:
            info = json.loads(response.read())
        assert info["description"].startswith("default MLP 784-256-128-10")
        assert info["test_accuracy"] > 0.97
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "stopped" in out and "Traceback" not in err
    assert "training" not in err  # loaded from the cache, not trained again
    assert path.stat().st_mtime_ns == mtime


def test_cli_serves_a_saved_model(tmp_path):
    model_path = tmp_path / "tiny.npz"
    nn.Sequential(nn.Flatten(), nn.Linear(784, 10)).save(model_path)
    process = _start(["--model", str(model_path)], dict(os.environ))
    try:
        url = _url(process)
        request = urllib.request.Request(
            url + "api/predict",
            json.dumps({"image": [0.5] * 784}).encode(),
            {"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert 0 <= json.loads(response.read())["label"] <= 9
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0


@pytest.mark.skipif(
    not os.environ.get("FASTNN_CI"),
    reason="the console script exists once the package is installed (CI installs it)",
)
def test_console_script_is_installed():
    script = shutil.which("fastnn-demo")
    assert script, "pip install should have put fastnn-demo on PATH"
    process = subprocess.run(
        [script, "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert process.returncode == 0 and "--no-browser" in process.stdout


@pytest.mark.parametrize(
    "args,message", [(["--model", "no-such-file.npz"], "no such"), (["--port", "70000"], "--port")]
)
def test_cli_errors(args, message, tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "fastnn.demo", "--no-browser", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 2
    assert message in process.stderr and "Traceback" not in process.stderr


def test_a_damaged_cache_file_is_trained_again(demo_cache):
    recipe = models.check_recipe({"hidden": [16], "epochs": 1, "limit": 2000})
    path = models.default_model_path(recipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a model")
    messages = []
    served = models.default_served(log=messages.append, recipe=recipe)
    assert any("ignoring the cached default model" in m for m in messages)
    assert served.layers[1] == "Linear(784, 16)"
    again = []
    models.default_served(log=again.append, recipe=recipe)
    assert again == []  # the rewritten file is read back


def test_cache_dir_follows_xdg_cache_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert models.cache_dir() == tmp_path / "fastnn" / "demo"
