"""Shared fixtures of the interop tests: MNIST test images and the example architectures."""

import importlib.util
from pathlib import Path

import pytest

import fastnn

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def mnist_test():
    """The first 512 MNIST test images (uint8, (N, 28, 28)) and labels."""
    _, (x_test, y_test) = fastnn.datasets.mnist()
    return x_test[:512], y_test[:512]


@pytest.fixture(scope="session")
def mnist_train_small():
    """2,000 MNIST training images and labels, for short trainings."""
    (x_train, y_train), _ = fastnn.datasets.mnist()
    return x_train[:2000], y_train[:2000]


def _example_module(name):
    path = EXAMPLES / f"{name}.py"
    if not path.exists():
        pytest.skip("examples/ is not beside tests/")
    spec = importlib.util.spec_from_file_location(f"_interop_example_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def example_builders():
    """{"mlp": ..., "cnn": ..., "lenet5": ...}: functions building the examples' models."""
    mlp = _example_module("mnist_mlp")
    cnn = _example_module("mnist_cnn")
    return {
        "mlp": lambda: mlp.build_mlp((512, 256)),
        "cnn": cnn.build_cnn,
        "lenet5": cnn.build_lenet,
    }
