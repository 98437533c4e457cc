"""fastnn: small, fast MNIST-scale neural networks with Cython kernels and a NumPy reference."""
__version__ = "0.1.0"

from . import backends, datasets
from ._threads import get_num_threads, set_num_threads

__all__ = ["__version__", "backends", "datasets", "get_num_threads", "set_num_threads"]
