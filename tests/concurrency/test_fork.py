"""Processes forked after the parent trained: GNU OpenMP's thread pool does not survive fork,
so fastnn runs the child's kernels on one thread (fastnn._threads). The child must predict,
evaluate and train with bitwise the parent's results, and multiprocessing's "fork" Pool must
finish. Each case runs in a fresh interpreter under a timeout, so a hang fails the test instead
of stalling the run."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from fastnn import backends
from fastnn._threads import openmp_enabled

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

BACKENDS = ["numpy"] + (["cpu"] if backends.available()["cpu"] else [])
TIMEOUT_S = 120

# Shared by the scripts: a trained MLP and CNN, from a parent running 2 threads.
_SETUP = """
import os, pickle, sys, warnings
import numpy as np
import fastnn
from fastnn import Trainer, nn, optim

backend = sys.argv[1]
fastnn.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.integers(0, 256, (300, 28, 28), dtype=np.uint8)
y = rng.integers(0, 10, 300)


def build(kind):
    fastnn.seed(1)
    if kind == "mlp":
        layers = [nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)]
    else:
        layers = [nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                  nn.Linear(4 * 12 * 12, 10)]
    return nn.Sequential(*layers, backend=backend)


def trained(kind):
    model = build(kind)
    fastnn.seed(2)
    Trainer(model, optim.SGD(lr=0.05, momentum=0.9), backend=backend).fit(
        x, y, epochs=1, batch_size=64, verbose=0)
    return model


def work(model):
    \"\"\"Everything a worker does with a trained model: predict, evaluate, train on.\"\"\"
    trainer = Trainer(model, optim.Adam(lr=1e-3), backend=backend)
    out = {"labels": model.predict(x), "proba": model.predict_proba(x[:17]),
           "evaluate": trainer.evaluate(x, y)}
    fastnn.seed(3)
    trainer.fit(x, y, epochs=1, batch_size=50, verbose=0)
    out["weights"] = model.state_dict()
    out["threads"] = fastnn.get_num_threads()
    return out


def same(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return np.asarray(a).tobytes() == np.asarray(b).tobytes()


models = {kind: trained(kind) for kind in ("mlp", "cnn")}
states = {kind: m.state_dict() for kind, m in models.items()}
"""

_OS_FORK = (
    _SETUP
    + """
read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:  # the child: the same work on its copy of the trained models
    os.close(read_end)
    results = {kind: work(m) for kind, m in models.items()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fastnn.set_num_threads(2)
    results["after_set"] = (fastnn.get_num_threads(), [str(w.message) for w in caught])
    with os.fdopen(write_end, "wb") as pipe:
        pickle.dump(results, pipe)
    os._exit(0)
os.close(write_end)
with os.fdopen(read_end, "rb") as pipe:
    child = pickle.load(pipe)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0
for kind, model in models.items():
    mine = work(model)
    assert mine["threads"] == 2, mine["threads"]
    if fastnn._threads.openmp_enabled() and backend == "cpu":
        assert child[kind]["threads"] == 1, child[kind]["threads"]
    for key in ("labels", "proba", "evaluate", "weights"):
        assert same(mine[key], child[kind][key]), f"{kind}: child's {key} differs"
print("after_set", child["after_set"])
print("ok")
"""
)

_POOL = (
    _SETUP
    + """
import multiprocessing


def predict_chunk(args):
    kind, lo, hi = args
    return models[kind].predict(x[lo:hi]), models[kind].predict_proba(x[lo:hi])


def train_copy(kind):
    model = build(kind)
    model.load_state_dict(states[kind])
    return work(model)["weights"]


if __name__ == "__main__":
    chunks = [(kind, lo, lo + 70) for kind in models for lo in range(0, 300, 70)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        predicted = pool.map(predict_chunk, chunks)
        trained_weights = pool.map(train_copy, list(models))
    for (kind, lo, hi), (labels, proba) in zip(chunks, predicted):
        assert same(labels, models[kind].predict(x[lo:hi])), (kind, lo)
        assert same(proba, models[kind].predict_proba(x[lo:hi])), (kind, lo)
    for kind, weights in zip(models, trained_weights):
        assert same(weights, train_copy(kind)), kind
    print("ok")
"""
)

# Forked before any kernel ran on several threads: no pool to lose, the count is kept.
_EARLY_FORK = """
import os, sys
import fastnn
fastnn.set_num_threads(2)
pid = os.fork()
if pid == 0:
    os._exit(0 if fastnn.get_num_threads() == 2 else 3)
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_script(tmp_path, script, *args):
    """Run `script` in a new session; on a hang kill the whole process group (the hung process
    is often a forked child, which killing the script alone would leave behind)."""
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    process = subprocess.Popen(
        [sys.executable, str(path), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"hung: no result after {TIMEOUT_S} s")
    finally:  # whatever the script left running in its group
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert process.returncode == 0, stdout + stderr
    return stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_forked_child_predicts_evaluates_and_trains_like_the_parent(tmp_path, backend):
    out = run_script(tmp_path, _OS_FORK, backend)
    assert out.strip().endswith("ok")
    if openmp_enabled() and backend == "cpu":  # the parent's kernels ran on 2 threads: the
        # child stays on one, and says so when asked for more
        assert "after_set (1, [" in out and "forked process" in out, out


@pytest.mark.parametrize("backend", BACKENDS)
def test_fork_pool_finishes_with_the_parents_results(tmp_path, backend):
    assert run_script(tmp_path, _POOL, backend).strip().endswith("ok")


@pytest.mark.skipif(not openmp_enabled(), reason="kernels built without OpenMP: one thread")
def test_child_forked_before_any_parallel_kernel_keeps_its_threads(tmp_path):
    run_script(tmp_path, _EARLY_FORK)
