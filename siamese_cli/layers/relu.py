"""ReLU: max(x, 0) + negative_slope * min(x, 0); may run in place (top is bottom)."""
import numpy as np

from .base import NeuronLayer


class ReLU(NeuronLayer):
    type = "ReLU"

    def setup(self, bottom, top):
        self.negative_slope = np.float32(self.param.relu_param.negative_slope)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.negative_slope == 0:
            np.maximum(x, np.float32(0), out=top[0].data)
        else:
            top[0].data[...] = np.where(x > 0, x, x * self.negative_slope)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        # In place, bottom data already holds the output; its sign decides the same way
        # (Caffe reads bottom data here too).
        positive = bottom[0].data > 0
        if self.negative_slope == 0:
            np.multiply(top[0].diff, positive, out=bottom[0].diff)
        else:
            slope = np.where(positive, np.float32(1), self.negative_slope)
            np.multiply(top[0].diff, slope, out=bottom[0].diff)
