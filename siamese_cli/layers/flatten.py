"""Flatten: merge axes axis..end_axis into one (a copy, not a view of the bottom)."""
from ._common import canonical_axis, count
from .base import Layer


class Flatten(Layer):
    type = "Flatten"
    num_bottom = 1
    num_top = 1

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("cannot run in place; give the top its own name")
        shape = bottom[0].shape
        p = self.param.flatten_param
        start = canonical_axis(self, p.axis, len(shape))
        end = canonical_axis(self, p.end_axis, len(shape))
        top[0].reshape(shape[:start] + (count(shape, start, end + 1),) + shape[end + 1:])

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.reshape(bottom[0].shape)
