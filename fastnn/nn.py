"""`from fastnn import nn`: the layers, Sequential and the losses in one namespace."""

from .extra_layers import AvgPool2d, BatchNorm1d, BatchNorm2d, GlobalAvgPool2d, LeakyReLU
from .layers import Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, ReLU, Sigmoid, Tanh
from .losses import MSE, CrossEntropy, Loss
from .model import Sequential

__all__ = [
    "Layer",
    "Linear",
    "Conv2d",
    "MaxPool2d",
    "Flatten",
    "ReLU",
    "Sigmoid",
    "Tanh",
    "Dropout",
    "Sequential",
    "Loss",
    "CrossEntropy",
    "MSE",
    "BatchNorm1d",
    "BatchNorm2d",
    "AvgPool2d",
    "GlobalAvgPool2d",
    "LeakyReLU",
]
