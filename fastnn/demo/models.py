"""The models the demo serves: the default MLP (trained once, cached), a saved model, or one
trained from the page's panel; the thread-safe wrapper the server predicts through; and
`train_recipe`, the training run behind both the default model and the panel (training.py runs
it in the background)."""

import hashlib
import itertools
import json
import math
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

from .. import Trainer, __version__, datasets, load, nn, optim, seed
from .activations import Inspector

# The default network: the 3Blue1Brown-style picture with room to learn (98.2% on the MNIST
# test set, a few seconds of training on two cores).
DEFAULT_RECIPE = {
    "hidden": [256, 128],
    "activation": "relu",
    "optimizer": "sgd",
    "lr": 0.1,
    "epochs": 5,
    "batch_size": 128,
    "seed": 0,
    "limit": 60000,
}
ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
OPTIMIZERS = ("sgd", "adam")
# Bounds of what the panel may ask for: enough to play, not enough to exhaust the machine.
MAX_HIDDEN_LAYERS = 4
MAX_HIDDEN_UNITS = 2048
MAX_EPOCHS = 50
TRAIN_IMAGES = 60000
INPUT_SHAPE = (28, 28)
CLASSES = 10

_versions = itertools.count(1)


def cache_dir():
    """Where the default model is kept: $XDG_CACHE_HOME/fastnn/demo (~/.cache without it;
    the platform's cache folder on macOS and Windows)."""
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        if sys.platform == "darwin":
            base = Path.home() / "Library" / "Caches"
        elif os.name == "nt" and os.environ.get("LOCALAPPDATA"):
            base = Path(os.environ["LOCALAPPDATA"])
        else:
            base = Path.home() / ".cache"
    return Path(base) / "fastnn" / "demo"


def default_model_path(recipe=None):
    """The cache file for `recipe` (default: DEFAULT_RECIPE), named by a digest of the recipe
    and fastnn's version, so a change to either trains afresh."""
    recipe = DEFAULT_RECIPE if recipe is None else recipe
    key = json.dumps({"recipe": recipe, "fastnn": __version__}, sort_keys=True)
    return cache_dir() / f"default-mlp-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def check_recipe(params):
    """A complete training recipe from the panel's JSON `params` (missing keys take the
    default's values); ValueError naming the field for anything else (TypeError when
    `params` is no dict)."""
    if not isinstance(params, dict):
        raise TypeError("the training parameters must be a JSON object")
    unknown = sorted(set(params) - set(DEFAULT_RECIPE))
    if unknown:
        raise ValueError(
            f"unknown training parameter(s) {unknown}; expected some of {sorted(DEFAULT_RECIPE)}"
        )
    recipe = dict(DEFAULT_RECIPE, **params)
    hidden = recipe["hidden"]
    if (
        not isinstance(hidden, list)
        or len(hidden) > MAX_HIDDEN_LAYERS
        or not all(_is_int(h) and 1 <= h <= MAX_HIDDEN_UNITS for h in hidden)
    ):
        raise ValueError(
            f"hidden must be a list of at most {MAX_HIDDEN_LAYERS} layer sizes, "
            f"each 1 to {MAX_HIDDEN_UNITS}; got {hidden!r}"
        )
    if recipe["activation"] not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}, got {recipe['activation']!r}"
        )
    if recipe["optimizer"] not in OPTIMIZERS:
        raise ValueError(
            f"optimizer must be one of {list(OPTIMIZERS)}, got {recipe['optimizer']!r}"
        )
    lr = recipe["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr <= 10:
        raise ValueError(f"lr must be a number in (0, 10], got {lr!r}")
    for name, low, high in (
        ("epochs", 1, MAX_EPOCHS),
        ("batch_size", 1, TRAIN_IMAGES),
        ("limit", 1, TRAIN_IMAGES),
        ("seed", 0, 2**32 - 1),
    ):
        if not _is_int(recipe[name]) or not low <= recipe[name] <= high:
            raise ValueError(
                f"{name} must be an integer from {low} to {high}, got {recipe[name]!r}"
            )
    recipe["lr"] = float(lr)
    return recipe


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def build_mlp(recipe):
    """The MLP a recipe describes, freshly initialized from fastnn's random stream."""
    layers = [nn.Flatten()]
    width = INPUT_SHAPE[0] * INPUT_SHAPE[1]
    for units in recipe["hidden"]:
        layers += [nn.Linear(width, units), ACTIVATIONS[recipe["activation"]]()]
        width = units
    layers.append(nn.Linear(width, CLASSES))
    return nn.Sequential(*layers, input_shape=INPUT_SHAPE)


def build_optimizer(recipe):
    schedule = optim.CosineLR(recipe["epochs"])
    if recipe["optimizer"] == "adam":
        return optim.Adam(lr=recipe["lr"], schedule=schedule)
    return optim.SGD(
        lr=recipe["lr"], momentum=0.9, nesterov=True, weight_decay=5e-4, schedule=schedule
    )


def describe_recipe(recipe):
    sizes = "-".join(str(s) for s in [784, *recipe["hidden"], CLASSES])
    return (
        f"MLP {sizes} {recipe['activation']}, {recipe['optimizer']} lr {recipe['lr']:g}, "
        f"{recipe['epochs']} epochs, batch {recipe['batch_size']}"
    )


class ServedModel:
    """A model the server predicts with: never trained again once served (training builds a
    new one), so any number of request threads may predict at once (Sequential.predict_proba
    is thread-safe: the compiled inference plan keeps its buffers per thread), plus a NumPy
    copy of the weights for the activations."""

    def __init__(self, model, description, test_accuracy=None):
        shape = model_input_shape(model)
        self.model = model.eval()
        self.input_shape = shape
        self.description = description
        self.test_accuracy = test_accuracy
        self.version = next(_versions)
        self.layers = [repr(layer) for layer in model.layers]
        self._inspector = Inspector(model.config(), model.state_dict())

    def info(self):
        return {
            "version": self.version,
            "description": self.description,
            "layers": self.layers,
            "test_accuracy": self.test_accuracy,
            "activations": self._inspector.supported or self._inspector.reason,
        }

    def predict(self, image, activations=True):
        """{"label", "probabilities", "activations"} for one (28, 28) float32 image."""
        x = np.ascontiguousarray(image, dtype=self.model.dtype).reshape((1, *self.input_shape))
        probabilities = self.model.predict_proba(x)[0]
        result = {
            "label": int(np.argmax(probabilities)),
            "probabilities": [float(p) for p in probabilities],
        }
        if activations:
            _, hidden = self._inspector.run(image)
            result["activations"] = {"layers": hidden, "kind": _kind(hidden)}
        return result

    def logits(self, image):
        """The NumPy copy's output for one image (for checking it against the model)."""
        return self._inspector.run(image)[0]


def _kind(hidden):
    return "cnn" if any(h["kind"] == "conv" for h in hidden) else "mlp"


def model_input_shape(model):
    """The per-sample shape `model` takes a 28x28 image in: (28, 28) or (784,); ValueError
    when it takes neither or does not give 10 class scores."""
    problems = []
    for shape in (INPUT_SHAPE, (INPUT_SHAPE[0] * INPUT_SHAPE[1],)):
        try:
            out = model.output_shape(shape)
        except ValueError as exc:
            problems.append(str(exc))
            continue
        if tuple(out) != (CLASSES,):
            raise ValueError(
                f"the demo serves digit classifiers: the model must output "
                f"{CLASSES} scores per image, this one gives shape {tuple(out)}"
            )
        return shape
    raise ValueError(f"the model does not take 28x28 images: {problems[0]}")


def load_served(path):
    """A saved fastnn model as a ServedModel (ValueError when it is no 28x28 classifier)."""
    model = load(path)
    return ServedModel(model, f"{Path(path).name}: {_summary(model)}")


def _summary(model):
    return ", ".join(repr(layer) for layer in model.layers if layer.param_names)


def mnist():
    """(x_train, y_train), (x_test, y_test), loaded once per process."""
    global _mnist
    with _mnist_lock:
        if _mnist is None:
            _mnist = datasets.mnist()
        return _mnist


_mnist = None
_mnist_lock = threading.Lock()


def default_served(log=print, recipe=None):
    """The default MLP: loaded from the cache, or trained now (and cached atomically)."""
    recipe = DEFAULT_RECIPE if recipe is None else recipe
    path = default_model_path(recipe)
    accuracy = None
    model = None
    if path.exists():
        try:
            model = load(path)
            model_input_shape(model)
        except ValueError as exc:  # damaged or foreign file: train again and replace it
            log(f"ignoring the cached default model ({exc}); training it again")
            model = None
    if model is None:
        log(
            f"training the default model ({describe_recipe(recipe)}), once; it is cached in "
            f"{path.parent}"
        )

        def progress(event):
            if event["type"] == "epoch":
                log(
                    f"epoch {event['epoch']}/{recipe['epochs']}: loss {event['loss']:.4f}, "
                    f"test accuracy {100 * event['val_accuracy']:.2f}%"
                )

        model, accuracy = train_recipe(recipe, log=log, emit=progress)
        path.parent.mkdir(parents=True, exist_ok=True)
        model.save(path)
    else:
        (_, _), (x_test, y_test) = mnist()
        accuracy = float(np.mean(model.predict(x_test) == y_test))
    return ServedModel(model, "default " + describe_recipe(recipe), accuracy)


# Step events per epoch at most (the curve needs no more points than it has pixels).
STEP_EVENTS_PER_EPOCH = 100


class Cancelled(Exception):
    pass


class _Progress:
    """Trainer callback: turns steps and epochs into events; stops the trainer on cancel."""

    def __init__(self, emit, cancel, steps_per_epoch):
        self.emit, self.cancel, self.steps = emit, cancel, steps_per_epoch
        self.every = max(1, steps_per_epoch // STEP_EVENTS_PER_EPOCH)
        self.loss_sum, self.count = 0.0, 0

    def on_batch_end(self, trainer, epoch, step, loss):
        self.loss_sum += float(loss)
        self.count += 1
        if self.count == self.every or step + 1 == self.steps:
            self.emit(
                {
                    "type": "step",
                    "epoch": epoch + 1,
                    "step": step + 1,
                    "steps": self.steps,
                    "progress": epoch + (step + 1) / self.steps,
                    "loss": self.loss_sum / self.count,
                }
            )
            self.loss_sum, self.count = 0.0, 0
        if self.cancel.is_set():
            trainer.stop_training = True

    def on_epoch_end(self, trainer, epoch, logs):
        self.emit({"type": "epoch", "epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}})


def train_recipe(recipe, log=None, emit=None, cancel=None):
    """(model, test accuracy) trained as `recipe` says on MNIST; raises Cancelled when
    `cancel` (a threading.Event) is set during the run."""
    (x, y), (x_test, y_test) = mnist()
    limit = recipe["limit"]
    x, y = x[:limit], y[:limit]
    cancel = threading.Event() if cancel is None else cancel
    steps = math.ceil(x.shape[0] / recipe["batch_size"])
    progress = _Progress(emit or (lambda event: None), cancel, steps)
    seed(recipe["seed"])
    model = build_mlp(recipe)
    trainer = Trainer(model, build_optimizer(recipe), backend=model.backend.name)
    started = time.perf_counter()
    history = trainer.fit(
        x,
        y,
        epochs=recipe["epochs"],
        batch_size=recipe["batch_size"],
        validation_data=(x_test, y_test),
        verbose=0,
        callbacks=[progress],
    )
    if cancel.is_set() or history.interrupted:
        raise Cancelled
    accuracy = history["val_accuracy"][-1]
    if log is not None:
        log(
            f"trained in {time.perf_counter() - started:.1f} s: test accuracy {100 * accuracy:.2f}%"
        )
    return model, accuracy
