"""Sigmoid: 1 / (1 + exp(-x)); backward uses the output, so it may run in place."""
import numpy as np

from .base import NeuronLayer


class Sigmoid(NeuronLayer):
    type = "Sigmoid"

    def forward(self, bottom, top):
        one = np.float32(1)
        with np.errstate(over="ignore"):
            top[0].data[...] = one / (one + np.exp(-bottom[0].data))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * y * (np.float32(1) - y)
