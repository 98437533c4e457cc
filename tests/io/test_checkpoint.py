"""Checkpoints and resume: fit(checkpoint=PATH) after every epoch, fit(resume=PATH) continues
to bitwise the weights of an uninterrupted run, even after SIGKILL mid-epoch or mid-write."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastnn
from fastnn import _random, checkpoint, fileformat, nn, optim


def data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 8, 8), dtype=np.uint8), rng.integers(0, 10, n)


def mlp():
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Dropout(0.2), nn.Linear(24, 10)
    )


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.1),
        nn.Linear(4 * 4 * 4, 10),
    )


SETUPS = {
    "mlp-adam-cosine": (
        mlp,
        lambda: optim.Adam(lr=5e-3, weight_decay=1e-4, schedule=optim.CosineLR(5)),
    ),
    "cnn-sgd-nesterov-step": (
        cnn,
        lambda: optim.SGD(
            lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4, schedule=optim.StepLR(2, 0.5)
        ),
    ),
    "mlp-sgd-plain": (mlp, lambda: optim.SGD(lr=0.1)),
}
FIT = dict(batch_size=32, validation_split=0.2, verbose=0)


def run(setup, backend, epochs, seed=5, **kwargs):
    make_model, make_opt = SETUPS[setup]
    fastnn.seed(seed)
    model = make_model()
    trainer = fastnn.Trainer(model, make_opt(), backend=backend)
    history = trainer.fit(*data(), epochs=epochs, **FIT, **kwargs)
    return model, trainer, history


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].tobytes() == sb[name].tobytes(), name


def assert_same_history(a, b):
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert a[key] == b[key], key


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_resume_ends_with_the_uninterrupted_weights(tmp_path, setup, backend):
    full_model, full_trainer, full = run(setup, backend, 5)
    full_stream = _random.get_state()
    path = tmp_path / "run.ckpt"
    run(setup, backend, 2, checkpoint=path)
    # another process would start from scratch: another seed, fresh weights and optimizer
    model, trainer, history = run(setup, backend, 4, seed=99, checkpoint=path, resume=path)
    assert history.epochs == 4 and checkpoint.read(path)[0]["epoch"] == 4
    model, trainer, history = run(setup, backend, 5, seed=98, checkpoint=path, resume=path)
    assert_same_weights(model, full_model)
    assert_same_history(history, full)
    assert trainer.optimizer.steps == full_trainer.optimizer.steps
    assert _random.get_state() == full_stream  # the stream goes on as after the full run
    assert sorted(os.listdir(tmp_path)) == ["run.ckpt"]  # no temporary files left


def test_checkpoint_holds_weights_optimizer_state_rng_and_history(tmp_path):
    path = tmp_path / "run.ckpt"
    model, trainer, history = run("mlp-adam-cosine", "cpu", 3, checkpoint=path)
    header, params, buffers = checkpoint.read(path)
    assert header["epoch"] == 3
    assert header["optimizer_steps"] == trainer.optimizer.steps == 3 * 6
    assert header["optimizer_lr"] == trainer.optimizer.lr
    assert header["history"]["loss"] == history["loss"]
    assert header["rng"]["after_epoch"] == _random.get_state()
    for name, value in model.state_dict().items():
        assert params[name].tobytes() == value.tobytes()
    state = trainer.optimizer.state_dict()["state"]
    for name, bufs in state.items():
        assert set(buffers[name]) == {"m", "v"}
        for key, value in bufs.items():
            assert buffers[name][key].tobytes() == value.tobytes()


def test_resuming_a_finished_run_changes_nothing(tmp_path):
    path = tmp_path / "run.ckpt"
    done_model, _, done = run("mlp-sgd-plain", "cpu", 2, checkpoint=path)
    model, trainer, history = run("mlp-sgd-plain", "cpu", 2, seed=7, resume=path)
    assert_same_weights(model, done_model)
    assert history["loss"] == done["loss"] and trainer.optimizer.steps == 12


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(batch_size=16), "batch_size"),
        (dict(shuffle=False), "batch_size, shuffle"),
        (dict(validation_split=0.25), "validation_split"),
        (dict(data_seed=1), "training data"),
        (dict(model=cnn), "architecture"),
        (dict(opt=lambda: optim.Adam(lr=1e-3)), "optimizer"),
        (dict(opt=lambda: optim.Adam(lr=5e-3, weight_decay=1e-4)), "optimizer"),
    ],
)
def test_resume_refuses_a_different_run(tmp_path, change, match):
    path = tmp_path / "run.ckpt"
    run("mlp-adam-cosine", "cpu", 1, checkpoint=path)
    before = path.read_bytes()
    fastnn.seed(3)
    model = change.get("model", mlp)()
    weights = model.state_dict()
    trainer = fastnn.Trainer(model, change.get("opt", SETUPS["mlp-adam-cosine"][1])())
    fit = dict(FIT, epochs=2)
    fit.update(
        {k: v for k, v in change.items() if k in ("batch_size", "shuffle", "validation_split")}
    )
    rng_state = _random.get_state()
    with pytest.raises(ValueError, match=match):
        trainer.fit(*data(seed=change.get("data_seed", 0)), **fit, resume=path, checkpoint=path)
    # refused before any change: weights, random stream and the checkpoint itself
    for name, value in model.state_dict().items():
        assert value.tobytes() == weights[name].tobytes()
    assert _random.get_state() == rng_state and path.read_bytes() == before


def test_missing_or_damaged_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError):
        run("mlp-sgd-plain", "cpu", 2, resume=tmp_path / "absent.ckpt")
    path = tmp_path / "run.ckpt"
    run("mlp-sgd-plain", "cpu", 1, checkpoint=path)
    good = path.read_bytes()
    rng = np.random.default_rng(0)
    damaged = [good[:n] for n in range(0, len(good), len(good) // 40)]
    for _ in range(60):
        raw = bytearray(good)
        raw[rng.integers(len(raw))] ^= 1 << rng.integers(8)
        damaged.append(bytes(raw))
    model_file = tmp_path / "model.npz"
    mlp().save(model_file)
    damaged.append(model_file.read_bytes())  # a model, not a checkpoint
    refused = 0
    for payload in damaged:
        path.write_bytes(payload)
        try:
            checkpoint.read(path)
        except ValueError as exc:
            assert "not a valid fastnn checkpoint" in str(exc)
            refused += 1
    # flips in unused zip fields may leave a readable file; everything else is refused
    assert refused >= len(damaged) - 10


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run.ckpt"
    run("mlp-sgd-plain", "cpu", 1, checkpoint=path)
    good = path.read_bytes()

    atomic_write = fileformat.atomic_write

    def half_then_fail(path, write):
        def fail(f):
            f.write(b"half a checkpoint")
            raise OSError("disk full")

        atomic_write(path, fail)

    monkeypatch.setattr(fileformat, "atomic_write", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        run("mlp-sgd-plain", "cpu", 3, checkpoint=path, resume=path)
    assert path.read_bytes() == good and sorted(os.listdir(tmp_path)) == ["run.ckpt"]


def test_bad_paths():
    with pytest.raises(TypeError, match="path"):
        run("mlp-sgd-plain", "cpu", 1, checkpoint=3)
    with pytest.raises(TypeError, match="path"):
        run("mlp-sgd-plain", "cpu", 1, resume=["x"])


# ---- killed training processes ------------------------------------------------------------------

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys
    import numpy as np
    import fastnn
    from fastnn import callbacks, nn, optim

    checkpoint, out = sys.argv[1], sys.argv[2]
    kill_at = int(os.environ.get("KILL_AT_STEP", "0"))

    if os.environ.get("PAUSE_WRITE"):  # "<epoch>:<marker>": stop half way through that write
        import io, time
        from fastnn import fileformat
        pause_epoch, marker = os.environ["PAUSE_WRITE"].split(":", 1)
        atomic_write, writes = fileformat.atomic_write, []

        def pausing_write(path, write):
            writes.append(path)
            if len(writes) != int(pause_epoch):  # one checkpoint write per epoch
                return atomic_write(path, write)

            def half_then_pause(f):
                payload = io.BytesIO()
                write(payload)
                f.write(payload.getvalue()[:len(payload.getvalue()) // 2])
                f.flush()
                os.fsync(f.fileno())
                open(marker, "w").close()
                time.sleep(60)  # the test kills the process meanwhile
            return atomic_write(path, half_then_pause)
        fileformat.atomic_write = pausing_write

    class KillAt(callbacks.Callback):
        def on_train_begin(self, trainer):
            if os.environ.get("STARTED_MARKER"):
                open(os.environ["STARTED_MARKER"], "w").close()

        def on_batch_end(self, trainer, epoch, step, loss):
            if trainer.optimizer.steps == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (400, 8, 8), dtype=np.uint8)
    y = rng.integers(0, 10, 400)
    fastnn.seed(11)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.25),
                          nn.Linear(32, 10))
    trainer = fastnn.Trainer(model, optim.Adam(lr=3e-3, schedule=optim.CosineLR(6)))
    resume = checkpoint if os.path.exists(checkpoint) else None
    history = trainer.fit(x, y, epochs=6, batch_size=16, validation_split=0.2, verbose=0,
                          checkpoint=checkpoint, resume=resume, callbacks=[KillAt()])
    np.savez(out, **model.state_dict())
    with open(out + ".json", "w") as f:
        json.dump({k: v for k, v in history.items() if k in ("loss", "val_loss", "lr")}, f)
""")
STEPS_PER_EPOCH = 20  # 320 training samples, batch 16


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    directory = tmp_path_factory.mktemp("killed")
    path = directory / "train.py"
    path.write_text(SCRIPT)
    return path


def start(script, ckpt, out, **env):
    environment = dict(os.environ, OMP_NUM_THREADS="1", **env)
    return subprocess.Popen(
        [sys.executable, str(script), str(ckpt), str(out)],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process, timeout=120):
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stderr


def result(out):
    with np.load(out) as f:
        weights = {k: f[k].tobytes() for k in f.files}
    with open(str(out) + ".json") as f:
        return weights, json.load(f)


@pytest.fixture(scope="module")
def uninterrupted(script, tmp_path_factory):
    directory = tmp_path_factory.mktemp("uninterrupted")
    out = directory / "out.npz"
    code, stderr = finish(start(script, directory / "run.ckpt", out))
    assert code == 0, stderr
    return result(out)


def test_sigkill_mid_epoch_then_resume(script, uninterrupted, tmp_path):
    ckpt, out = tmp_path / "run.ckpt", tmp_path / "out.npz"
    kill_at = 2 * STEPS_PER_EPOCH + 7  # epoch 3, step 7
    code, _ = finish(start(script, ckpt, out, KILL_AT_STEP=str(kill_at)))
    assert code == -signal.SIGKILL and not out.exists()
    assert checkpoint.read(ckpt)[0]["epoch"] == 2
    code, stderr = finish(start(script, ckpt, out))
    assert code == 0, stderr
    assert result(out) == uninterrupted


def test_sigkill_mid_write_keeps_the_last_checkpoint_then_resume(script, uninterrupted, tmp_path):
    ckpt, out, marker = tmp_path / "run.ckpt", tmp_path / "out.npz", tmp_path / "paused"
    process = start(script, ckpt, out, PAUSE_WRITE=f"4:{marker}")
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    code, _ = finish(process)
    assert code == -signal.SIGKILL
    # the half-written temporary is there, and the checkpoint is still epoch 3's, complete
    temporaries = [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    assert len(temporaries) == 1 and 0 < (tmp_path / temporaries[0]).stat().st_size
    assert checkpoint.read(ckpt)[0]["epoch"] == 3
    code, stderr = finish(start(script, ckpt, out))
    assert code == 0, stderr
    assert result(out) == uninterrupted
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_sigkill_at_random_moments_then_resume(script, uninterrupted, tmp_path):
    """Killed four times at random moments of training (including checkpoint writes), then run
    to the end."""
    ckpt, out, started = tmp_path / "run.ckpt", tmp_path / "out.npz", tmp_path / "started"
    rng = np.random.default_rng(int(os.environ.get("FASTNN_KILL_SEED", 0)))
    for attempt in range(5):
        if started.exists():
            started.unlink()
        process = start(script, ckpt, out, STARTED_MARKER=str(started))
        if attempt < 4:
            deadline = time.monotonic() + 120
            while not started.exists() and process.poll() is None:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.5))
            process.send_signal(signal.SIGKILL)
        code, stderr = finish(process)
        assert code in (0, -signal.SIGKILL), stderr
        if code == 0:
            break
    assert code == 0
    assert result(out) == uninterrupted
