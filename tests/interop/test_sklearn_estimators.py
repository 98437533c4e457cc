"""fastnn.sklearn: MLPClassifier and CNNClassifier pass scikit-learn's own estimator checks
(the one that cannot pass is listed with its reason), take scikit-learn's MLPClassifier
parameters with the same defaults and meanings, keep its fitted attributes, and pickle as
plain data."""

import io
import pickle
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastnn

sklearn = pytest.importorskip("sklearn")
fastnn_sklearn = pytest.importorskip("fastnn.sklearn")

from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import ConvergenceWarning, NotFittedError  # noqa: E402
from sklearn.neural_network import MLPClassifier as SklearnMLP  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

MLPClassifier = fastnn_sklearn.MLPClassifier
CNNClassifier = fastnn_sklearn.CNNClassifier

# Small networks, few epochs, one thread: every check fits in a fraction of a second.
CHECKED = [
    MLPClassifier(hidden_layer_sizes=(32,), max_iter=50, random_state=0, n_threads=1),
    CNNClassifier(
        conv_channels=(4,),
        hidden_layer_sizes=(16,),
        learning_rate_init=0.01,
        max_iter=10,
        random_state=0,
        n_threads=1,
    ),
]

SUBSET_REASON = (
    "fastnn computes in float32 and its matrix products take another path for 1 to 4 rows, so "
    "a sample's probabilities predicted alone differ from the same sample's in a batch in the "
    "last float32 bits (~6e-8); the check asks for float64 agreement (rtol 1e-7). Predicted "
    "classes agree."
)


def expected_failed_checks(estimator):
    if isinstance(estimator, MLPClassifier):
        return {"check_methods_subset_invariance": SUBSET_REASON}
    return {}  # the CNN's tiny test images happen to take one path for every batch size


@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks)
def test_sklearn_estimator_checks(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


# ---- the parameters of scikit-learn's MLPClassifier ---------------------------------------------

SHARED_PARAMS = [
    "hidden_layer_sizes",
    "activation",
    "solver",
    "alpha",
    "batch_size",
    "learning_rate_init",
    "max_iter",
    "shuffle",
    "random_state",
    "tol",
    "early_stopping",
    "validation_fraction",
    "n_iter_no_change",
    "momentum",
    "nesterovs_momentum",
    "beta_1",
    "beta_2",
    "epsilon",
    "verbose",
]


def test_parameters_and_defaults_match_sklearn():
    ours, theirs = MLPClassifier().get_params(), SklearnMLP().get_params()
    for name in SHARED_PARAMS:
        assert ours[name] == theirs[name], name
    assert set(ours) - set(theirs) == {"backend", "n_threads"}
    assert CNNClassifier().get_params()["solver"] == "adam"


def test_lbfgs_is_refused_clearly():
    x, y = np.eye(4), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="lbfgs.*not supported.*'adam' or 'sgd'"):
        MLPClassifier(solver="lbfgs").fit(x, y)


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"solver": "newton"}, ValueError, "solver"),
        ({"activation": "gelu"}, ValueError, "activation"),
        ({"hidden_layer_sizes": (10, 0)}, ValueError, "hidden_layer_sizes"),
        ({"hidden_layer_sizes": "10"}, ValueError, "hidden_layer_sizes"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": "all"}, TypeError, "batch_size"),
        ({"learning_rate_init": 0.0}, ValueError, "learning_rate_init"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"max_iter": 2.5}, TypeError, "max_iter"),
        ({"validation_fraction": 1.0}, ValueError, "validation_fraction"),
        ({"beta_1": 1.0}, ValueError, "beta_1"),
        ({"momentum": -0.1}, ValueError, "momentum"),
        ({"epsilon": 0}, ValueError, "epsilon"),
        ({"shuffle": "yes"}, TypeError, "shuffle"),
        ({"backend": "tpu"}, ValueError, "backend"),
        ({"n_threads": 0}, ValueError, "n_threads"),
    ],
)
def test_bad_parameters_are_named(params, error, match):
    x, y = np.eye(4), np.array([0, 1, 0, 1])
    with pytest.raises(error, match=match):
        MLPClassifier(**params).fit(x, y)


@settings(max_examples=40, deadline=None)
@given(
    name=st.sampled_from(["alpha", "tol", "learning_rate_init", "epsilon", "beta_2"]),
    value=st.one_of(
        st.floats(max_value=-1e-9),
        st.just(float("nan")),
        st.just(float("inf")),
        st.text(max_size=3),
        st.booleans(),
    ),
)
def test_invalid_numbers_raise_naming_the_parameter(name, value):
    x, y = np.eye(4), np.array([0, 1, 0, 1])
    with pytest.raises((TypeError, ValueError), match=name):
        MLPClassifier(**{name: value}).fit(x, y)


def test_cnn_parameters_are_checked():
    x, y = np.zeros((4, 3, 3)), np.array([0, 1, 0, 1])
    with pytest.raises(ValueError, match="odd kernel_size"):
        CNNClassifier(kernel_size=4).fit(x, y)
    with pytest.raises(ValueError, match="does not fit"):
        CNNClassifier(kernel_size=5, padding="valid").fit(x, y)
    with pytest.raises(ValueError, match="image_shape"):
        CNNClassifier(image_shape=(2, 5)).fit(x.reshape(4, 9), y)


# ---- fitted attributes and behaviour ------------------------------------------------------------


@pytest.fixture(scope="module")
def digits(mnist_train_small, mnist_test):
    """MNIST as scikit-learn users feed it: flattened rows of pixels / 255."""
    (x, y), (xt, yt) = mnist_train_small, mnist_test
    return (x.reshape(len(x), -1) / 255.0, y), (xt.reshape(len(xt), -1) / 255.0, yt)


def test_fitted_attributes_are_sklearns(digits):
    (x, y), _ = digits
    clf = MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=3, random_state=0, n_threads=1)
    with pytest.warns(ConvergenceWarning):
        clf.fit(x[:500], y[:500])
    ref = SklearnMLP(hidden_layer_sizes=(32, 16), max_iter=3, random_state=0)
    with pytest.warns(ConvergenceWarning):
        ref.fit(x[:500], y[:500])
    for name in ["classes_", "n_features_in_", "n_iter_", "t_", "n_layers_", "n_outputs_"]:
        np.testing.assert_array_equal(getattr(clf, name), getattr(ref, name), err_msg=name)
    assert [c.shape for c in clf.coefs_] == [c.shape for c in ref.coefs_]
    assert [b.shape for b in clf.intercepts_] == [b.shape for b in ref.intercepts_]
    assert len(clf.loss_curve_) == clf.n_iter_ and clf.loss_ == clf.loss_curve_[-1]
    assert clf.best_loss_ == min(clf.loss_curve_)
    assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    assert clf.out_activation_ == "softmax" and clf.n_threads_ == 1
    # coefs_ and intercepts_ are the network: a NumPy forward pass with them gives predict_proba
    h = x[:50]
    for w, b in zip(clf.coefs_[:-1], clf.intercepts_[:-1]):
        h = np.maximum(h @ w + b, 0)
    z = h @ clf.coefs_[-1] + clf.intercepts_[-1]
    p = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(
        clf.predict_proba(x[:50]), p / p.sum(axis=1, keepdims=True), atol=1e-5
    )


def test_unfitted_estimator_raises_not_fitted():
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(np.eye(3))
    assert not hasattr(MLPClassifier(), "coefs_")


@pytest.mark.parametrize("labels", [["cat", "dog", "emu"], [3, 7, 42], [-1.0, 2.0, 9.0]])
def test_string_and_non_contiguous_labels(labels, digits):
    (x, y), _ = digits
    keep = y < 3
    named = np.asarray(labels, dtype=object if isinstance(labels[0], str) else None)[y[keep]]
    clf = MLPClassifier(hidden_layer_sizes=(16,), max_iter=20, random_state=0, n_threads=1)
    clf.fit(x[keep], named)
    np.testing.assert_array_equal(clf.classes_, np.sort(np.asarray(labels)))
    predicted = clf.predict(x[keep])
    assert set(predicted) <= set(labels)
    assert (predicted == named).mean() > 0.9


def test_same_random_state_same_network_and_callers_stream_untouched(digits):
    (x, y), _ = digits
    fastnn.seed(123)
    expected_draw = fastnn._random.generator().random()
    fastnn.seed(123)
    fits = [
        MLPClassifier(hidden_layer_sizes=(16,), max_iter=2, random_state=rs, n_threads=1).fit(
            x[:300], y[:300]
        )
        for rs in (5, 5, 6)
    ]
    assert fastnn._random.generator().random() == expected_draw
    np.testing.assert_array_equal(fits[0].coefs_[0], fits[1].coefs_[0])
    assert not np.array_equal(fits[0].coefs_[0], fits[2].coefs_[0])


def test_tol_and_n_iter_no_change_stop_as_sklearn_does(digits):
    """With a tolerance no epoch can meet, both stop after n_iter_no_change + 2 epochs."""
    (x, y), _ = digits
    kwargs = {
        "hidden_layer_sizes": (8,),
        "max_iter": 50,
        "tol": 1e6,
        "n_iter_no_change": 3,
        "random_state": 0,
    }
    ours = MLPClassifier(**kwargs, n_threads=1).fit(x[:300], y[:300])
    theirs = SklearnMLP(**kwargs).fit(x[:300], y[:300])
    assert ours.n_iter_ == theirs.n_iter_ == 5


def test_early_stopping_keeps_the_best_validation_epoch(digits):
    (x, y), _ = digits
    clf = MLPClassifier(
        hidden_layer_sizes=(32,),
        early_stopping=True,
        n_iter_no_change=2,
        max_iter=30,
        random_state=0,
        n_threads=1,
        solver="sgd",
        learning_rate_init=0.05,
    ).fit(x[:1000], y[:1000])
    assert clf.best_loss_ is None
    assert len(clf.validation_scores_) == clf.n_iter_ >= 3
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    # the kept weights are the best epoch's: refitting for exactly that many epochs agrees
    best_epoch = int(np.argmax(clf.validation_scores_)) + 1
    again = clone(clf).set_params(early_stopping=True, max_iter=best_epoch, n_iter_no_change=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        again.fit(x[:1000], y[:1000])
    np.testing.assert_array_equal(clf.coefs_[0], again.coefs_[0])


def test_mlp_and_cnn_learn_mnist(digits, mnist_train_small, mnist_test):
    (x, y), (xt, yt) = digits
    mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=8, random_state=0, n_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        mlp.fit(x, y)
        assert mlp.score(xt, yt) > 0.85
        images, labels = mnist_train_small
        cnn = CNNClassifier(
            conv_channels=(8,),
            hidden_layer_sizes=(32,),
            max_iter=3,
            learning_rate_init=0.005,
            random_state=0,
            n_threads=1,
        ).fit(images / 255.0, labels)
    test_images = mnist_test[0] / 255.0
    assert cnn.image_shape_ == (28, 28) and cnn.n_features_in_ == 784
    assert cnn.score(test_images, yt) > 0.8
    # flattened rows with image_shape: the same network sees the same images
    flat = clone(cnn).set_params(image_shape=(28, 28))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        flat.fit((images / 255.0).reshape(len(images), -1), labels)
    np.testing.assert_array_equal(
        flat.predict(test_images.reshape(len(yt), -1)), cnn.predict(test_images)
    )
    np.testing.assert_array_equal(
        cnn.predict(test_images.reshape(len(yt), -1)), cnn.predict(test_images)
    )
    with pytest.raises(ValueError, match="was fit on"):
        cnn.predict(test_images[:, :27, :27])


# ---- pickling --------------------------------------------------------------------------------------


def pickled_globals(data):
    """(module, name) of every global the pickle loads (what it can make run on load)."""
    found = set()

    class Recording(pickle.Unpickler):
        def find_class(self, module, name):
            found.add((module, name))
            return super().find_class(module, name)

    Recording(io.BytesIO(data)).load()
    return found


@pytest.mark.parametrize(
    "make",
    [
        lambda: MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0, n_threads=1),
        lambda: CNNClassifier(
            conv_channels=(2,), hidden_layer_sizes=(), max_iter=1, random_state=0, n_threads=1
        ),
    ],
)
def test_pickle_round_trip_holds_plain_data(make, mnist_train_small):
    images, labels = mnist_train_small
    x = images[:400].reshape(400, -1) / 255.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = make().fit(x, labels[:400])
    data = pickle.dumps(clf)
    loaded = pickle.loads(data)
    np.testing.assert_array_equal(loaded.predict_proba(x), clf.predict_proba(x))
    assert loaded.get_params() == clf.get_params()
    modules = {module.split(".")[0] for module, _ in pickled_globals(data)}
    assert modules <= {"numpy", "builtins", "copyreg", "_codecs", "fastnn"}, modules
    fastnn_globals = {(m, n) for m, n in pickled_globals(data) if m.startswith("fastnn")}
    assert fastnn_globals == {("fastnn.sklearn", type(clf).__name__)}
    assert not hasattr(clf, "_model_data")  # pickling left the estimator as it was


def test_fits_in_threads_give_the_serial_results(digits):
    """GridSearchCV(n_jobs=..., backend "threading") fits in threads of one process: each fit
    still follows its own random_state."""
    from concurrent.futures import ThreadPoolExecutor

    (x, y), _ = digits

    def fit(random_state):
        clf = MLPClassifier(
            hidden_layer_sizes=(16,), max_iter=2, random_state=random_state, n_threads=1
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return clf.fit(x[:400], y[:400]).coefs_[0]

    serial = [fit(rs) for rs in (1, 2, 3, 4)]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(fit, (1, 2, 3, 4)))
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)
