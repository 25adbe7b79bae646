"""AbsVal: |x|; the gradient is sign(x), 0 at 0."""
import numpy as np

from ._common import kept_input
from .base import NeuronLayer


class AbsVal(NeuronLayer):
    type = "AbsVal"

    def forward(self, bottom, top):
        self.x = kept_input(bottom, top)
        np.abs(bottom[0].data, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * np.sign(self.x)
