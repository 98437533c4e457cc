"""`from fastnn import nn`: the layers, Sequential and the losses in one namespace."""
from .layers import Conv2d, Dropout, Flatten, Layer, Linear, MaxPool2d, ReLU, Sigmoid, Tanh
from .losses import MSE, CrossEntropy, Loss
from .model import Sequential

__all__ = ["Layer", "Linear", "Conv2d", "MaxPool2d", "Flatten", "ReLU", "Sigmoid", "Tanh",
           "Dropout", "Sequential", "Loss", "CrossEntropy", "MSE"]
