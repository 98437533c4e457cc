"""Training checkpoints: `Trainer.fit(..., checkpoint=PATH)` writes one after every epoch,
`Trainer.fit(..., resume=PATH)` continues from one.

A checkpoint holds everything the rest of the run depends on: the weights; the optimizer's
state (momentum or Adam moments, step count, current learning rate); how many epochs are done;
fastnn's random stream as it was when the original fit began (the validation split is drawn from
it) and after the last finished epoch (shuffling, dropout); and the history so far. It also
records what must not change for the continuation to be exact -- the architecture, the optimizer
and its hyperparameters, batch_size, shuffle, validation_split and a digest of the data -- and
resuming with anything else raises ValueError. So a run killed at any moment (SIGKILL included)
and resumed with the same data and epochs ends with bitwise the weights, and the same history
apart from timings, of one that was never interrupted (cpu and numpy backends).

The file is an .npz like fastnn.save's (arrays plus a JSON header, no pickle), written to a
temporary file beside PATH, flushed, fsynced and renamed over PATH, then the directory fsynced:
a crash leaves the previous complete checkpoint in place, never half of one. Reading checks every
.npy header, shape, dtype and SHA-256 digest, so a damaged checkpoint raises ValueError.

Not saved: callbacks' own state (EarlyStopping's best weights, ...) and a device backend's dropout
generator (a resumed CUDA run reseeds it from the restored stream, so its masks differ).
"""

import glob
import hashlib
import json
import os

import numpy as np

from . import _random, fileformat
from ._version import __version__
from .serialization import model_from_architecture

FORMAT = "fastnn.checkpoint"
FORMAT_VERSION = 1
HEADER = "__checkpoint__"


def _data_digest(x, y):
    h = hashlib.blake2b(digest_size=16)
    for a in (x, y):
        a = np.ascontiguousarray(a if isinstance(a, np.ndarray) else a.get())  # device data
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def _optimizer_identity(optimizer):
    schedule = optimizer.schedule
    if schedule is None:
        schedule_id = None
    elif hasattr(schedule, "config"):
        schedule_id = [type(schedule).__name__, schedule.config()]
    else:  # a plain callable: only its name can be compared
        schedule_id = getattr(schedule, "__qualname__", type(schedule).__name__)
    return json.loads(
        json.dumps(
            {
                "type": type(optimizer).__name__,
                "config": optimizer.config(),
                "schedule": schedule_id,
            }
        )
    )


def _architecture(model):
    """The model's config() without input_shape (fit sets that from the data)."""
    config = json.loads(json.dumps(model.config()))
    config.pop("input_shape", None)
    return config


class Session:
    """The checkpointing of one fit call. Create it after the arguments are checked and before
    anything draws from fastnn's random stream; then restore() once the model is on its backend
    and the optimizer attached, and save() after every epoch."""

    def __init__(self, trainer, checkpoint, resume, x, y, run):
        """run: the fit arguments that decide the result (batch_size, shuffle,
        validation_split). Raises ValueError (FileNotFoundError for a missing resume file)
        before changing anything when `resume` cannot continue this fit."""
        self.path = (
            None if checkpoint is None else os.path.abspath(fileformat.check_path(checkpoint))
        )
        self.run = dict(run, data=_data_digest(x, y))
        self.architecture = _architecture(trainer.model)
        self.optimizer = _optimizer_identity(trainer.optimizer)
        self.resumed = None
        if resume is not None:
            self.resumed = read(resume)
            self._check_compatible(resume, self.resumed[0])
            self.fit_start_rng = self.resumed[0]["rng"]["fit_start"]
            _random.set_state(self.fit_start_rng)  # the same validation split as the first run
        else:
            self.fit_start_rng = _random.get_state()
        if self.path is not None:
            self._remove_stale_temporaries()

    @classmethod
    def start(cls, trainer, checkpoint, resume, x, y, run):
        """A Session, or None when fit was given neither checkpoint nor resume."""
        if checkpoint is None and resume is None:
            return None
        return cls(trainer, checkpoint, resume, x, y, run)

    def _check_compatible(self, path, header):
        differences = [
            what
            for what, mine, theirs in (
                ("the architecture", self.architecture, header["architecture"]),
                ("the optimizer or its hyperparameters", self.optimizer, header["optimizer"]),
                (
                    "batch_size, shuffle or validation_split",
                    {k: v for k, v in self.run.items() if k != "data"},
                    {k: v for k, v in header["run"].items() if k != "data"},
                ),
                ("the training data", self.run["data"], header["run"].get("data")),
            )
            if mine != theirs
        ]
        if differences:
            raise ValueError(
                f"{path}: cannot resume: the checkpoint was written with different "
                f"{', '.join(differences)}"
            )

    def _remove_stale_temporaries(self):
        """Temporary files a killed writer left beside the checkpoint (see fileformat.atomic_write)."""
        directory, name = os.path.split(self.path)
        for stale in glob.glob(os.path.join(glob.escape(directory), f".{glob.escape(name)}.*.tmp")):
            try:
                os.unlink(stale)
            except OSError:
                pass

    # ---- resume --------------------------------------------------------------------------------

    def restore(self, trainer):
        """Load the resumed checkpoint into the trainer's model, optimizer and random stream.
        Returns (epochs done, {history key: list}); (0, None) when not resuming."""
        if self.resumed is None:
            return 0, None
        header, params, buffers = self.resumed
        model, optimizer = trainer.model, trainer.optimizer
        model.load_state_dict(params)
        optimizer.load_state_dict(
            {
                "type": type(optimizer).__name__,
                "config": optimizer.config(),
                "steps": header["optimizer_steps"],
                "lr": header["optimizer_lr"],
                "state": buffers,
            }
        )
        _random.set_state(header["rng"]["after_epoch"])
        return header["epoch"], header["history"]

    # ---- save ----------------------------------------------------------------------------------

    def save(self, trainer, epoch, history):
        """Write the checkpoint for `epoch` finished epochs (a no-op without a path)."""
        if self.path is None:
            return
        model, optimizer = trainer.model, trainer.optimizer
        arrays = {f"param.{name}": a for name, a in model.state_dict().items()}
        state = optimizer.state_dict()
        for name, bufs in state["state"].items():
            for key, a in bufs.items():
                arrays[f"optim.{name}.{key}"] = a
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "fastnn_version": __version__,
            "epoch": int(epoch),
            "architecture": self.architecture,
            "optimizer": self.optimizer,
            "optimizer_steps": int(state["steps"]),
            "optimizer_lr": float(state["lr"]),
            "run": self.run,
            "rng": {"fit_start": self.fit_start_rng, "after_epoch": _random.get_state()},
            "history": {key: [float(v) for v in values] for key, values in history.items()},
            "arrays": fileformat.array_entries(arrays),
        }
        fileformat.write_npz(self.path, HEADER, header, arrays)


# ---- reading ---------------------------------------------------------------------------------


def read(path):
    """(header, {param name: array}, {param name: {buffer: array}}) from a checkpoint file;
    ValueError when it is not a valid one."""
    return fileformat.read_file(path, "checkpoint", _read)


def _expect(header, key, kind):
    value = header.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ValueError(f"header field {key!r} is missing or has the wrong type")
    return value


def _read(archive):
    header = fileformat.read_format_header(
        archive, HEADER, FORMAT, FORMAT_VERSION, "checkpoint", __version__
    )
    epoch = _expect(header, "epoch", int)
    steps = _expect(header, "optimizer_steps", int)
    if epoch < 0 or steps < 0:
        raise ValueError("epoch and step counts must be >= 0")
    _expect(header, "optimizer_lr", float)
    for key in ("architecture", "optimizer", "run", "rng", "history", "arrays"):
        _expect(header, key, dict)
    rng = header["rng"]
    if not isinstance(rng.get("fit_start"), dict) or not isinstance(rng.get("after_epoch"), dict):
        raise ValueError("header lacks the random stream's states")
    for state in (rng["fit_start"], rng["after_epoch"]):  # ValueError unless restorable
        _random.check_state(state)
    history = header["history"]
    if not all(
        isinstance(v, list) and len(v) == epoch and all(isinstance(e, float) for e in v)
        for v in history.values()
    ):
        raise ValueError(f"history must hold {epoch} numbers per key")

    model = model_from_architecture(header["architecture"])
    shapes = {f"param.{name}": shape for name, shape in model.param_shapes().items()}
    buffer_names = [k[len("optim.") :] for k in header["arrays"] if k.startswith("optim.")]
    for name in buffer_names:
        param, _, key = name.rpartition(".")
        if f"param.{param}" not in shapes or not key:
            raise ValueError(f"optimizer buffer {name!r} names no parameter")
        shapes[f"optim.{name}"] = shapes[f"param.{param}"]
    if set(header["arrays"]) != set(shapes) or archive.files != set(shapes) | {HEADER}:
        raise ValueError("the arrays do not match the architecture's parameters")
    state_dtypes = model.state_dtypes()  # BatchNorm running statistics are float64
    arrays = fileformat.read_arrays(
        archive,
        shapes,
        header["arrays"],
        {k: state_dtypes.get(k[len("param.") :], model.dtype) for k in shapes},
    )
    params = {k[len("param.") :]: a for k, a in arrays.items() if k.startswith("param.")}
    buffers = {slot.name: {} for slot in model.parameter_slots()}  # trained parameters only
    for name in buffer_names:
        param, _, key = name.rpartition(".")
        buffers[param][key] = arrays[f"optim.{name}"]
    return header, params, buffers
