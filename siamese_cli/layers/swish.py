"""Swish: x * sigmoid(beta * x) (Ramachandran et al. 2017), a later Caffe master addition."""
import numpy as np

from .base import NeuronLayer


class Swish(NeuronLayer):
    type = "Swish"

    def setup(self, bottom, top):
        self.beta = np.float32(self.param.swish_param.beta)

    def forward(self, bottom, top):
        one = np.float32(1)
        with np.errstate(over="ignore"):
            self.sigmoid = one / (one + np.exp(-self.beta * bottom[0].data))
        top[0].data[...] = bottom[0].data * self.sigmoid

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            # d/dx x s(bx) = s + b x s (1 - s) = b y + s (1 - b y), from the output alone.
            by = self.beta * top[0].data
            bottom[0].diff[...] = top[0].diff * (by + self.sigmoid * (np.float32(1) - by))
