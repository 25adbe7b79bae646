"""Caffe's Bias layer: add a learned blob (or a second bottom) broadcast over the first bottom.

The added blob covers bottom axes [axis, axis + its number of axes); it repeats over the axes
before (outer) and after (inner). Scale uses the same layout.
"""
import numpy as np

from ..blob import Blob
from ..fillers import fill
from ._common import canonical_axis, count
from .base import Layer


def param_shape(layer, shape, axis, num_axes, what):
    """The learned blob's shape: bottom dims [axis, axis + num_axes), num_axes -1 meaning to the end."""
    axis = canonical_axis(layer, axis, len(shape))
    if num_axes < -1:
        raise layer.error(f"{what}.num_axes must be -1 (to the end) or at least 0, got {num_axes}")
    end = len(shape) if num_axes == -1 else axis + num_axes
    if end > len(shape):
        raise layer.error(f"{what} axes [{axis}, {end}) run past the bottom's {len(shape)} axes {list(shape)}")
    return tuple(shape[axis:end])


def broadcast_layout(layer, shape, operand_shape, axis):
    """(outer, dim, inner) counts that lay the operand over a bottom of `shape`; checks the dims match."""
    axis = 0 if len(operand_shape) == 0 else canonical_axis(layer, axis, len(shape))
    covered = tuple(shape[axis:axis + len(operand_shape)])
    if covered != tuple(operand_shape):
        raise layer.error(f"operand of shape {list(operand_shape)} does not match bottom {list(shape)} "
                          f"from axis {axis} (dims there: {list(covered)})")
    return count(shape, 0, axis), count(operand_shape), count(shape, axis + len(operand_shape))


def sum_to_operand(values, layout):
    """Sum an (outer, dim, inner)-laid array over outer and inner: the operand's gradient, flat."""
    return values.reshape(layout).sum(axis=(0, 2), dtype=np.float32)


class Bias(Layer):
    type = "Bias"
    min_bottom = 1
    max_bottom = 2
    num_top = 1

    def setup(self, bottom, top):
        p = self.param.bias_param
        if len(bottom) == 1:
            shape = param_shape(self, bottom[0].shape, p.axis, p.num_axes, "bias_param")
            blob = Blob(shape)
            blob.data[...] = fill(p.filler, shape, self.rng)
            self.blobs = [blob]

    def reshape(self, bottom, top):
        operand = bottom[1] if len(bottom) > 1 else self.blobs[0]
        self.layout = broadcast_layout(self, bottom[0].shape, operand.shape, self.param.bias_param.axis)
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        operand = bottom[1] if len(bottom) > 1 else self.blobs[0]
        out = top[0].data.reshape(self.layout)
        np.add(bottom[0].data.reshape(self.layout), operand.data.reshape(1, -1, 1), out=out)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff
        if len(bottom) > 1:
            if len(propagate_down) > 1 and propagate_down[1]:
                bottom[1].diff[...] = sum_to_operand(dy, self.layout).reshape(bottom[1].shape)
        else:
            self.blobs[0].diff += sum_to_operand(dy, self.layout).reshape(self.blobs[0].shape)
        if propagate_down[0] and bottom[0] is not top[0]:
            bottom[0].diff[...] = dy
