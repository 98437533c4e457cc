"""scikit-learn estimators backed by fastnn: `MLPClassifier`, a drop-in for
`sklearn.neural_network.MLPClassifier`, and `CNNClassifier` for images.

Needs scikit-learn (`pip install scikit-learn`). Both estimators follow scikit-learn's
rules (parameters stored untouched by `__init__`, fitted attributes ending in `_`, input checked
with `validate_data`), pass its `check_estimator`, work in Pipelines and searches, and pickle
as plain data (the network travels as its architecture and numpy arrays, rebuilt on load).

Differences from scikit-learn's MLPClassifier, all where fastnn works differently:
- `solver` is "sgd" or "adam" ("lbfgs" is refused: fastnn trains with minibatches only), and
  `learning_rate` is always "constant" (no "invscaling" / "adaptive" parameter).
- Computation is float32. `X` is taken as numbers, exactly as scikit-learn does: uint8 images
  are not rescaled (divide by 255 yourself, as for scikit-learn).
- The L2 penalty `alpha` is applied as weight decay `alpha / batch_size` on every parameter,
  the intercepts included (scikit-learn leaves the intercepts out).
- Two classes use a two-unit softmax output, not one logistic unit, so `coefs_[-1]` has two
  columns and `out_activation_` is "softmax" for every problem.
- `backend` ("cpu", "numpy", "cuda") picks where fastnn computes, and `n_threads` how many
  threads it uses during fit and predict (None: fastnn's setting, or 1 inside a Dask worker,
  where the worker's own threads already use the cores).

`random_state` seeds fastnn's random stream for the fit (initialisation, shuffling) and the
early-stopping split; the caller's fastnn stream is restored afterwards.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from contextlib import contextmanager

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data
except ImportError:  # pragma: no cover - exercised only without scikit-learn
    raise ImportError(
        'fastnn.sklearn needs scikit-learn >= 1.6: pip install "scikit-learn>=1.6" '
        '(in a fastnn checkout: pip install ".[sklearn]")'
    ) from None

from . import _random, _threads, nn, optim
from .model import Sequential
from .trainer import Trainer
from .validation import integer, real

__all__ = ["CNNClassifier", "MLPClassifier"]

ACTIVATIONS = {"identity": None, "logistic": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
SOLVERS = ("sgd", "adam")
BACKENDS = ("cpu", "numpy", "cuda")
PADDINGS = ("same", "valid")


# ---- parameter checks (scikit-learn checks at fit, never in __init__) --------------------------


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_bool(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def _check_sizes(name, value, allow_empty):
    sizes = (value,) if _is_int(value) else value
    try:
        sizes = tuple(sizes)
    except TypeError:
        raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}") from None
    if not sizes and not allow_empty:
        raise ValueError(f"{name} must not be empty")
    for s in sizes:
        if not _is_int(s) or s < 1:
            raise ValueError(f"{name} must hold positive ints, got {value!r}")
    return tuple(int(s) for s in sizes)


# ---- threads and the random stream ------------------------------------------------------------


def _in_dask_worker():
    """Whether this call runs as a task on a dask.distributed worker (without importing it)."""
    if "distributed" not in sys.modules:
        return False
    try:
        from distributed import get_worker

        get_worker()
    except (ImportError, ValueError):
        return False
    return True


def threads_for_fit(n_threads):
    """Threads fastnn computes with for one fit: `n_threads` when given; else 1 in a Dask worker
    (each worker thread runs its own fit, so the cores are already shared out); else fastnn's
    current setting."""
    if n_threads is not None:
        return n_threads
    if _in_dask_worker():
        return 1
    return _threads.get_num_threads()


@contextmanager
def _threads_limited(n):
    before = _threads.get_num_threads()
    if n == before:
        yield
        return
    _threads.set_num_threads(n)
    try:
        yield
    finally:
        _threads.set_num_threads(before)


@contextmanager
def _seeded_stream(seed):
    """fastnn's random stream seeded with `seed` inside, for this thread only (`_random.using`):
    the caller's stream is left as it was, and fits in several threads run side by side."""
    with _random.using(_random.Stream.from_seed(seed)):
        yield


class _EpochMonitor:
    """Trainer callback: scikit-learn's stopping rule (tol / n_iter_no_change on the training
    loss, or on the validation accuracy with early_stopping) and its per-epoch attributes."""

    def __init__(self, estimator, penalty_scale, early_stopping, verbose):
        self.estimator = estimator
        self.penalty_scale = penalty_scale
        self.early_stopping = early_stopping
        self.verbose = verbose
        self.loss_curve = []
        self.validation_scores = [] if early_stopping else None
        self.best_loss = np.inf
        self.best_score = -np.inf
        self.best_state = None
        self.no_improvement = 0
        self.converged = False

    def on_epoch_end(self, trainer, epoch, logs):
        est = self.estimator
        model = trainer.model
        penalty = 0.0
        if self.penalty_scale:
            state = model.state_dict()
            penalty = self.penalty_scale * sum(
                float(np.sum(np.square(v, dtype=np.float64)))
                for k, v in state.items()
                if k.endswith(".weight")
            )
        loss = float(logs["loss"]) + penalty
        self.loss_curve.append(loss)
        if self.verbose:
            print(f"Iteration {epoch + 1}, loss = {loss:.8f}")
        if self.early_stopping:
            score = float(logs["val_accuracy"])
            self.validation_scores.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            improved = score >= self.best_score + est.tol
            if score > self.best_score:
                self.best_score = score
                self.best_state = model.state_dict()
        else:
            improved = loss <= self.best_loss - est.tol
            self.best_loss = min(self.best_loss, loss)
        self.no_improvement = 0 if improved else self.no_improvement + 1
        if self.no_improvement > est.n_iter_no_change:
            self.converged = True
            trainer.stop_training = True
            if self.verbose:
                what = "Validation score" if self.early_stopping else "Training loss"
                print(
                    f"{what} did not improve more than tol={est.tol} for "
                    f"{est.n_iter_no_change} consecutive epochs. Stopping."
                )


class _FastnnClassifier(ClassifierMixin, BaseEstimator):
    """What both estimators share: checks, the training loop, prediction, pickling."""

    _default_solver = "adam"

    # ---- subclass interface ----------------------------------------------------------------

    def _check_architecture(self):
        raise NotImplementedError

    def _build(self, n_features, n_classes):
        raise NotImplementedError

    def _as_input(self, X, reset):
        """(X as validated float32 rows, X in the shape the network takes)."""
        X = validate_data(self, X, reset=reset, dtype=np.float32, order="C")
        return X, X

    # ---- checks ----------------------------------------------------------------------------

    def _check_params(self):
        _check_choice("activation", self.activation, ACTIVATIONS)
        if self.solver == "lbfgs":
            raise ValueError(
                "solver='lbfgs' is not supported: fastnn trains with minibatches; "
                "use solver='adam' or 'sgd'"
            )
        _check_choice("solver", self.solver, SOLVERS)
        real("alpha", self.alpha, 0.0)
        if not (isinstance(self.batch_size, str) and self.batch_size == "auto"):
            if not _is_int(self.batch_size):
                raise TypeError(f"batch_size must be 'auto' or an int, got {self.batch_size!r}")
            integer("batch_size", self.batch_size, 1)
        real("learning_rate_init", self.learning_rate_init, 0.0, min_inclusive=False)
        integer("max_iter", self.max_iter, 1)
        _check_bool("shuffle", self.shuffle)
        real("tol", self.tol, 0.0)
        _check_bool("verbose", bool(self.verbose) if _is_int(self.verbose) else self.verbose)
        _check_bool("early_stopping", self.early_stopping)
        real("validation_fraction", self.validation_fraction, 0.0, min_inclusive=False, below=1.0)
        integer("n_iter_no_change", self.n_iter_no_change, 1)
        real("momentum", self.momentum, 0.0, 1.0)
        _check_bool("nesterovs_momentum", self.nesterovs_momentum)
        real("beta_1", self.beta_1, 0.0, below=1.0)
        real("beta_2", self.beta_2, 0.0, below=1.0)
        real("epsilon", self.epsilon, 0.0, min_inclusive=False)
        _check_choice("backend", self.backend, BACKENDS)
        if self.n_threads is not None:
            integer("n_threads", self.n_threads, 1)
            if self.n_threads > _threads.MAX_THREADS:
                raise ValueError(
                    f"n_threads must be <= {_threads.MAX_THREADS}, got {self.n_threads}"
                )
        self._check_architecture()

    def _labels(self, y, n_samples):
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None"
            )
        y = column_or_1d(y, warn=True)
        if y.shape[0] != n_samples:
            raise ValueError(f"y has {y.shape[0]} samples but X has {n_samples}")
        check_classification_targets(y)
        classes, encoded = np.unique(y, return_inverse=True)
        if classes.shape[0] < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes; y "
                f"holds 1 class ({classes[0]!r})"
            )
        return classes, encoded.reshape(-1).astype(np.int64)

    # ---- fitting ---------------------------------------------------------------------------

    def _optimizer(self, weight_decay):
        if self.solver == "sgd":
            momentum = float(self.momentum)
            return optim.SGD(
                lr=self.learning_rate_init,
                momentum=momentum,
                nesterov=bool(self.nesterovs_momentum) and momentum > 0,
                weight_decay=weight_decay,
            )
        return optim.Adam(
            lr=self.learning_rate_init,
            betas=(self.beta_1, self.beta_2),
            eps=self.epsilon,
            weight_decay=weight_decay,
        )

    def fit(self, X, y):
        """Train a new network on (X, y); returns self."""
        self._check_params()
        X_rows, X_net = self._as_input(X, reset=True)
        classes, y_encoded = self._labels(y, X_rows.shape[0])
        n_samples = X_rows.shape[0]
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        x_val = y_val = None
        if self.early_stopping:
            index = np.arange(n_samples)
            try:
                train, val = train_test_split(
                    index, test_size=self.validation_fraction, random_state=seed, stratify=y_encoded
                )
            except ValueError as exc:
                raise ValueError(
                    f"early_stopping cannot split off a stratified "
                    f"validation_fraction={self.validation_fraction} of "
                    f"{n_samples} samples: {exc}"
                ) from None
            x_val, y_val = X_net[val], y_encoded[val]
            X_net, y_encoded = X_net[train], y_encoded[train]
        n_train = X_net.shape[0]
        batch_size = min(200, n_train) if self.batch_size == "auto" else self.batch_size
        if batch_size > n_train:
            warnings.warn(
                f"batch_size {batch_size} is larger than the {n_train} training "
                f"samples; clipped to {n_train}",
                UserWarning,
                stacklevel=2,
            )
            batch_size = n_train
        weight_decay = self.alpha / batch_size
        steps = -(-n_train // batch_size)
        monitor = _EpochMonitor(
            self, 0.5 * self.alpha * steps / n_train, self.early_stopping, self.verbose
        )
        n_threads = threads_for_fit(self.n_threads)
        with _threads_limited(n_threads), _seeded_stream(seed):
            model = self._build(X_rows.shape[1], classes.shape[0])
            trainer = Trainer(
                model, self._optimizer(weight_decay), loss="cross_entropy", backend=self.backend
            )
            history = trainer.fit(
                X_net,
                y_encoded,
                epochs=self.max_iter,
                batch_size=batch_size,
                shuffle=bool(self.shuffle),
                validation_data=None if x_val is None else (x_val, y_val),
                callbacks=[monitor],
                verbose=0,
                progress=False,
            )
        if history.interrupted:
            raise KeyboardInterrupt
        if monitor.best_state is not None:  # early stopping keeps the best epoch's weights
            model.load_state_dict(monitor.best_state)
        model.eval()
        self.model_ = model
        self.classes_ = classes
        self.n_outputs_ = classes.shape[0]
        self.out_activation_ = "softmax"
        self.n_iter_ = len(monitor.loss_curve)
        self.t_ = n_train * self.n_iter_
        self.loss_curve_ = monitor.loss_curve
        self.loss_ = monitor.loss_curve[-1]
        self.best_loss_ = None if self.early_stopping else monitor.best_loss
        self.validation_scores_ = monitor.validation_scores
        self.best_validation_score_ = monitor.best_score if self.early_stopping else None
        self.n_threads_ = n_threads
        if not monitor.converged and self.n_iter_ == self.max_iter:
            warnings.warn(
                f"Stochastic Optimizer: Maximum iterations ({self.max_iter}) reached "
                f"and the optimization hasn't converged yet.",
                ConvergenceWarning,
                stacklevel=2,
            )
        return self

    # ---- prediction ------------------------------------------------------------------------

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in `classes_` order."""
        check_is_fitted(self)
        _, X_net = self._as_input(X, reset=False)
        with _threads_limited(threads_for_fit(self.n_threads)):
            proba = self.model_.predict_proba(X_net).astype(np.float64)
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def predict_log_proba(self, X):
        return np.log(self.predict_proba(X))

    def predict(self, X):
        """The most probable class of each sample (labels as given to fit)."""
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    # ---- scikit-learn protocol -------------------------------------------------------------

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = False
        tags.non_deterministic = self.backend == "cuda"
        return tags

    def __getstate__(self):
        """Plain data: the network as its architecture and numpy parameters, nothing that
        runs code on load beyond what scikit-learn's own estimators pickle."""
        state = dict(super().__getstate__())  # a copy: on 3.11+ it can be __dict__ itself
        model = state.pop("model_", None)
        if model is not None:
            state["_model_data"] = {"config": model.config(), "params": model.state_dict()}
        return state

    def __setstate__(self, state):
        state = dict(state)
        data = state.pop("_model_data", None)
        super().__setstate__(state)
        if data is not None:
            model = Sequential.from_config(data["config"], backend=self.backend, initialize=False)
            model.load_state_dict(data["params"])
            self.model_ = model.eval()


class MLPClassifier(_FastnnClassifier):
    """Multi-layer perceptron classifier trained by fastnn, with the parameters and fitted
    attributes of `sklearn.neural_network.MLPClassifier` (see the module docstring for the
    few differences). Fitted: classes_, coefs_ (shapes (in, out) as in scikit-learn),
    intercepts_, loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_,
    n_iter_, t_, n_layers_, n_outputs_, out_activation_, n_features_in_ (and feature_names_in_),
    plus model_ (the fastnn Sequential) and n_threads_."""

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        momentum=0.9,
        nesterovs_momentum=True,
        backend="cpu",
        n_threads=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.backend = backend
        self.n_threads = n_threads

    def _check_architecture(self):
        _check_sizes("hidden_layer_sizes", self.hidden_layer_sizes, allow_empty=True)

    def _build(self, n_features, n_classes):
        sizes = (n_features, *_check_sizes("hidden_layer_sizes", self.hidden_layer_sizes, True))
        activation = ACTIVATIONS[self.activation]
        layers = []
        for fan_in, fan_out in zip(sizes, sizes[1:]):
            layers.append(nn.Linear(fan_in, fan_out))
            if activation is not None:
                layers.append(activation())
        layers.append(nn.Linear(sizes[-1], n_classes))
        return Sequential(*layers, input_shape=(n_features,), backend=self.backend)

    @property
    def n_layers_(self):
        check_is_fitted(self)
        return len(self.coefs_) + 1

    def _linear_layers(self):
        check_is_fitted(self)
        return [layer for layer in self.model_ if isinstance(layer, nn.Linear)]

    @property
    def coefs_(self):
        """Weight matrices, coefs_[i] of shape (fan_in, fan_out) as in scikit-learn: views of
        the network's weights, so writing into them changes the model."""
        b = self.model_.backend
        return [b.to_numpy(layer.weight).T for layer in self._linear_layers()]

    @property
    def intercepts_(self):
        b = self.model_.backend
        return [b.to_numpy(layer.bias) for layer in self._linear_layers()]


class CNNClassifier(_FastnnClassifier):
    """Convolutional classifier for images: X of shape (n_samples, H, W), or flattened rows
    (n_samples, H * W) with `image_shape=(H, W)`; flattened rows without `image_shape` are
    taken as square images when the feature count is a square, else as 1-row images.

    The network: per entry of `conv_channels`, Conv2d(kernel_size) with `padding` "same"
    (kernel_size // 2, odd kernels) or "valid" (none), the activation, then MaxPool2d(pool_size)
    while the feature map is at least pool_size on both sides; Flatten; per entry of
    `hidden_layer_sizes` a Linear and the activation; a Linear to the classes. The training
    parameters are MLPClassifier's. Fitted: classes_, image_shape_, loss_curve_, loss_, n_iter_,
    ... as MLPClassifier, and model_."""

    def __init__(
        self,
        conv_channels=(32, 64),
        kernel_size=5,
        *,
        padding="same",
        pool_size=2,
        hidden_layer_sizes=(128,),
        image_shape=None,
        activation="relu",
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.001,
        max_iter=20,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        momentum=0.9,
        nesterovs_momentum=True,
        backend="cpu",
        n_threads=None,
    ):
        self.conv_channels = conv_channels
        self.kernel_size = kernel_size
        self.padding = padding
        self.pool_size = pool_size
        self.hidden_layer_sizes = hidden_layer_sizes
        self.image_shape = image_shape
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.backend = backend
        self.n_threads = n_threads

    def _check_architecture(self):
        _check_sizes("conv_channels", self.conv_channels, allow_empty=False)
        _check_sizes("hidden_layer_sizes", self.hidden_layer_sizes, allow_empty=True)
        integer("kernel_size", self.kernel_size, 1)
        _check_choice("padding", self.padding, PADDINGS)
        if self.padding == "same" and self.kernel_size % 2 == 0:
            raise ValueError(f"padding='same' needs an odd kernel_size, got {self.kernel_size}")
        integer("pool_size", self.pool_size, 1)
        if self.image_shape is not None:
            shape = _check_sizes("image_shape", self.image_shape, allow_empty=False)
            if len(shape) != 2:
                raise ValueError(f"image_shape must be (height, width), got {self.image_shape!r}")

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags

    def _image_shape_for(self, n_features, images):
        if images is not None:
            return images
        if self.image_shape is not None:
            h, w = self.image_shape
            if h * w != n_features:
                raise ValueError(
                    f"image_shape {tuple(self.image_shape)} has {h * w} pixels "
                    f"but X has {n_features} features"
                )
            return (int(h), int(w))
        side = math.isqrt(n_features)
        return (side, side) if side * side == n_features else (1, n_features)

    def _as_input(self, X, reset):
        images = None
        shape = getattr(X, "shape", None)
        if shape is not None and len(shape) == 3 and not hasattr(X, "iloc"):
            images = (int(shape[1]), int(shape[2]))
            if not reset and images != getattr(self, "image_shape_", images):
                raise ValueError(
                    f"X has images of shape {images}, but {type(self).__name__} "
                    f"was fit on {self.image_shape_}"
                )
            X = np.reshape(np.asarray(X), (shape[0], -1))
        X = validate_data(self, X, reset=reset, dtype=np.float32, order="C")
        if reset:
            self.image_shape_ = self._image_shape_for(X.shape[1], images)
        h, w = self.image_shape_
        return X, X.reshape(X.shape[0], 1, h, w)

    def _build(self, n_features, n_classes):
        activation = ACTIVATIONS[self.activation]
        k, pool = self.kernel_size, self.pool_size
        pad = k // 2 if self.padding == "same" else 0
        shape = (1, *self.image_shape_)
        layers = []
        for channels in _check_sizes("conv_channels", self.conv_channels, False):
            conv = nn.Conv2d(shape[0], channels, k, padding=pad)
            try:
                shape = conv.output_shape(shape)
            except ValueError:
                raise ValueError(
                    f"kernel_size={k} with padding={self.padding!r} does not fit "
                    f"a feature map of {shape[1:]} (images {self.image_shape_})"
                ) from None
            layers.append(conv)
            if activation is not None:
                layers.append(activation())
            if pool > 1 and min(shape[1:]) >= pool:
                layers.append(nn.MaxPool2d(pool))
                shape = layers[-1].output_shape(shape)
        layers.append(nn.Flatten())
        fan_in = math.prod(shape)
        for size in _check_sizes("hidden_layer_sizes", self.hidden_layer_sizes, True):
            layers.append(nn.Linear(fan_in, size))
            if activation is not None:
                layers.append(activation())
            fan_in = size
        layers.append(nn.Linear(fan_in, n_classes))
        return Sequential(*layers, input_shape=(1, *self.image_shape_), backend=self.backend)
