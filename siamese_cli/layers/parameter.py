"""Parameter: a learnable blob of parameter_param.shape, given as the top.

Lets a net feed a free parameter into any layer (as the second bottom of Scale, say).
It starts at zero, as in Caffe, unless weights are loaded; the top's gradient is its gradient.
"""
from ..blob import Blob
from .base import Layer


class Parameter(Layer):
    type = "Parameter"
    num_bottom = 0
    num_top = 1

    def setup(self, bottom, top):
        shape = tuple(int(d) for d in self.param.parameter_param.shape.dim)
        self.blobs = [Blob(shape)]

    def reshape(self, bottom, top):
        top[0].reshape(self.blobs[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = self.blobs[0].data

    def backward(self, top, propagate_down, bottom):
        self.blobs[0].diff += top[0].diff
