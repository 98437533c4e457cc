"""fastnn: small, fast MNIST-scale neural networks with Cython kernels and a NumPy reference."""

# first: the OpenMP wait policy has to be in the environment before the kernels load libgomp
from . import _openmp_env  # noqa: F401  # isort: skip
from . import backends, callbacks, datasets, nn, optim
from ._exclusive import ConcurrentTrainingError
from ._random import seed
from ._threads import get_num_threads, set_num_threads
from ._version import __version__
from .model import Sequential
from .profiler import profile
from .serialization import load
from .trainer import History, NonFiniteLossError, Trainer

__all__ = [
    "__version__",
    "backends",
    "callbacks",
    "datasets",
    "nn",
    "optim",
    "seed",
    "load",
    "Sequential",
    "Trainer",
    "History",
    "NonFiniteLossError",
    "get_num_threads",
    "set_num_threads",
    "profile",
    "ConcurrentTrainingError",
]
