"""TanH: tanh(x); backward uses the output, so it may run in place."""
import numpy as np

from .base import NeuronLayer


class TanH(NeuronLayer):
    type = "TanH"

    def forward(self, bottom, top):
        np.tanh(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            y = top[0].data
            bottom[0].diff[...] = top[0].diff * (np.float32(1) - y * y)
