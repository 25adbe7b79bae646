"""ELU: x for x > 0, alpha * (exp(x) - 1) otherwise (Clevert et al. 2015)."""
import numpy as np

from ._common import kept_input
from .base import NeuronLayer


class ELU(NeuronLayer):
    type = "ELU"

    def setup(self, bottom, top):
        self.alpha = np.float32(self.param.elu_param.alpha)

    def forward(self, bottom, top):
        x = bottom[0].data
        self.x = kept_input(bottom, top)
        top[0].data[...] = np.maximum(x, np.float32(0)) + self.alpha * np.expm1(np.minimum(x, np.float32(0)))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            # For x <= 0 the slope alpha * exp(x) is y + alpha.
            slope = np.where(self.x > 0, np.float32(1), top[0].data + self.alpha)
            bottom[0].diff[...] = top[0].diff * slope
