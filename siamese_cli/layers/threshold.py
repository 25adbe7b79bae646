"""Threshold: 1 where x > threshold, else 0. A step has no useful gradient, so there is no backward."""
import numpy as np

from .base import NeuronLayer


class Threshold(NeuronLayer):
    type = "Threshold"
    no_gradient_bottoms = (0,)

    def setup(self, bottom, top):
        self.threshold = np.float32(self.param.threshold_param.threshold)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data > self.threshold

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("has no backward pass (a step function); set propagate_down: false for its bottom")
