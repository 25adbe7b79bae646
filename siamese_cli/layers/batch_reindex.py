"""BatchReindex: top item i is bottom item permut[i] (indices may repeat or leave items out).

The second bottom is the 1-axis index blob; it gets no gradient. Backward adds each top
item's gradient to the item it came from.
"""
import numpy as np

from .base import Layer


class BatchReindex(Layer):
    type = "BatchReindex"
    num_bottom = 2
    num_top = 1
    no_gradient_bottoms = (1,)

    def reshape(self, bottom, top):
        data, permut = bottom[0].shape, bottom[1].shape
        if len(permut) != 1:
            raise self.error(f"the index bottom must have one axis, got shape {list(permut)}")
        if len(data) == 0:
            raise self.error("the data bottom needs at least one axis")
        top[0].reshape((permut[0],) + tuple(data[1:]))

    def _indices(self, bottom):
        values = bottom[1].data
        indices = values.astype(np.int64)
        items = bottom[0].shape[0]
        bad = (indices < 0) | (indices >= items)
        if bad.any():
            raise self.error(f"index {float(values[bad][0]):g} out of range for a batch of {items}; use 0..{items - 1}")
        return indices

    def forward(self, bottom, top):
        self.indices = self._indices(bottom)
        np.take(bottom[0].data, self.indices, axis=0, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            np.add.at(bottom[0].diff, self.indices, top[0].diff)
