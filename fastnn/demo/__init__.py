"""A draw-a-digit web page: live predictions and hidden activations of a fastnn model, and a
panel to train a new one. Run `python -m fastnn.demo` (or `fastnn-demo`)."""

from .cli import main
from .preprocess import mnist_style
from .server import DemoServer

__all__ = ["DemoServer", "main", "mnist_style"]
