"""BNLL (binomial normal log likelihood): log(1 + exp(x)), written so neither branch overflows."""
import numpy as np

from ._common import kept_input
from .base import NeuronLayer

_THRESHOLD = np.float32(50)  # Caffe's kBNLL_THRESHOLD: exp is capped there in the gradient


class BNLL(NeuronLayer):
    type = "BNLL"

    def forward(self, bottom, top):
        x = bottom[0].data
        self.x = kept_input(bottom, top)
        # x + log(1 + e^-x) for x > 0, log(1 + e^x) otherwise: both are log1p(e^-|x|) + max(x, 0).
        top[0].data[...] = np.log1p(np.exp(-np.abs(x))) + np.maximum(x, np.float32(0))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            e = np.exp(np.minimum(self.x, _THRESHOLD))
            bottom[0].diff[...] = top[0].diff * (e / (e + np.float32(1)))
