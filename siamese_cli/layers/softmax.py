"""Softmax over one axis (softmax_param.axis), computed after subtracting the maximum."""
import numpy as np

from ._common import canonical_axis, count
from .base import Layer


def softmax_axis(layer, shape):
    return canonical_axis(layer, layer.param.softmax_param.axis, len(shape))


def softmax(x, axis):
    """Softmax of float32 `x` along `axis`, in float32."""
    shifted = x - x.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


def as_outer_channel_inner(array, axis):
    """View `array` as (outer, channels, inner) around `axis`, as Caffe indexes it."""
    shape = array.shape
    return array.reshape(count(shape, 0, axis), shape[axis], count(shape, axis + 1))


class Softmax(Layer):
    type = "Softmax"
    num_bottom = 1
    num_top = 1

    def reshape(self, bottom, top):
        self.axis = softmax_axis(self, bottom[0].shape)
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        top[0].data[...] = softmax(bottom[0].data, self.axis)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        y = top[0].data
        dy = top[0].diff
        dot = (dy * y).sum(axis=self.axis, keepdims=True)
        bottom[0].diff[...] = (dy - dot) * y
