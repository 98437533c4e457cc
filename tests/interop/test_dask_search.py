"""Hyperparameter searches over fastnn estimators on a Dask cluster (joblib's Dask backend):
the same best parameters and scores as the local run, each fit computed in a worker process
with one fastnn thread per worker thread."""

import os
import sys
import time
import warnings

import numpy as np
import pytest

import fastnn

fastnn_sklearn = pytest.importorskip("fastnn.sklearn")
distributed = pytest.importorskip("distributed")
joblib = pytest.importorskip("joblib")
cloudpickle = pytest.importorskip("cloudpickle")

from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV  # noqa: E402

# The scorers below run in the workers, which cannot import this test module by name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def process_id(estimator, x, y):
    return os.getpid()


def fit_threads(estimator, x, y):
    """Threads fastnn computed the fit with (recorded by the estimator)."""
    return estimator.n_threads_


def process_default_threads(estimator, x, y):
    """Threads fastnn uses in this process outside the estimators' fits."""
    return fastnn.get_num_threads()


SCORING = {
    "accuracy": "accuracy",
    "pid": process_id,
    "fit_threads": fit_threads,
    "process_threads": process_default_threads,
}


@pytest.fixture(scope="module")
def data(mnist_train_small):
    x, y = mnist_train_small
    return x[:900].reshape(900, -1) / 255.0, y[:900]


@pytest.fixture(scope="module")
def client():
    # Two worker processes with one thread each. The workers' default fastnn thread count is
    # set to 2 (OMP_NUM_THREADS), so a fit that still computes with one thread shows the
    # estimators' own rule at work, not only Dask's environment.
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env={"OMP_NUM_THREADS": "2"},
    )
    with cluster, distributed.Client(cluster) as c:
        yield c


def search_both_ways(make_search, data, client):
    x, y = data
    threads = fastnn.get_num_threads()
    fastnn.set_num_threads(1)  # the local run: one process, one thread
    try:
        start = time.perf_counter()
        local = make_search().fit(x, y)
        local_time = time.perf_counter() - start
    finally:
        fastnn.set_num_threads(threads)
    start = time.perf_counter()
    with joblib.parallel_config(backend="dask"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        remote = make_search().fit(x, y)
    remote_time = time.perf_counter() - start
    print(
        f"\n{type(local).__name__}: local {local_time:.1f} s, Dask (2 worker processes x 1 "
        f"thread) {remote_time:.1f} s"
    )
    return local, remote


def assert_same_search(local, remote, n_candidates, x):
    results_local, results_remote = local.cv_results_, remote.cv_results_
    assert remote.best_params_ == local.best_params_
    assert remote.best_score_ == local.best_score_
    for split in range(3):
        key = f"split{split}_test_accuracy"
        np.testing.assert_array_equal(results_remote[key], results_local[key])
    # every fit ran in a worker process, not here, and computed with one thread although the
    # workers' default is two
    pids = {
        int(results_remote[f"split{s}_test_pid"][c]) for s in range(3) for c in range(n_candidates)
    }
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    np.testing.assert_array_equal(results_remote["mean_test_fit_threads"], 1)
    np.testing.assert_array_equal(results_remote["mean_test_process_threads"], 2)
    np.testing.assert_array_equal(
        remote.best_estimator_.predict(x), local.best_estimator_.predict(x)
    )


def test_grid_search_on_dask_matches_the_local_search(data, client):
    grid = {"hidden_layer_sizes": [(16,), (32,)], "alpha": [1e-4, 1e-1]}

    def make_search():
        estimator = fastnn_sklearn.MLPClassifier(max_iter=4, random_state=0)
        return GridSearchCV(estimator, grid, cv=3, scoring=SCORING, refit="accuracy")

    local, remote = search_both_ways(make_search, data, client)
    assert_same_search(local, remote, n_candidates=4, x=data[0][:200])


def test_randomized_search_over_cnns_on_dask_matches_the_local_search(data, client):
    space = {
        "conv_channels": [(2,), (4,)],
        "learning_rate_init": [0.003, 0.01, 0.03],
        "kernel_size": [3, 5],
    }

    def make_search():
        estimator = fastnn_sklearn.CNNClassifier(hidden_layer_sizes=(), max_iter=2, random_state=0)
        return RandomizedSearchCV(
            estimator, space, n_iter=3, cv=3, scoring=SCORING, refit="accuracy", random_state=0
        )

    local, remote = search_both_ways(make_search, data, client)
    assert_same_search(local, remote, n_candidates=3, x=data[0][:200])
