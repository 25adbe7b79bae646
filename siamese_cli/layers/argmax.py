"""ArgMax: the indices (and optionally values) of the top_k largest entries.

Without `axis` each item's values (all axes after the first, flattened) are ranked and the
top is N x 1 x top_k, or N x 2 x top_k with out_max_val (indices, then values). With `axis`
the ranking runs along that axis, whose size becomes top_k; out_max_val then gives the
values instead of the indices. Equal values rank the higher index first, as Caffe's sort
of (value, index) pairs does. There is no gradient.
"""
import numpy as np

from ._common import canonical_axis, count
from .base import Layer


class ArgMax(Layer):
    type = "ArgMax"
    num_bottom = 1
    num_top = 1
    no_gradient_bottoms = (0,)

    def setup(self, bottom, top):
        p = self.param.argmax_param
        self.out_max_val = p.out_max_val
        self.top_k = int(p.top_k)
        if self.top_k < 1:
            raise self.error("argmax_param.top_k must be at least 1")
        self.axis = canonical_axis(self, p.axis, len(bottom[0].shape)) if p.HasField("axis") else None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        size = shape[self.axis] if self.axis is not None else count(shape, 1)
        if self.top_k > size:
            where = f"axis {self.axis}" if self.axis is not None else "each item"
            raise self.error(f"top_k {self.top_k} exceeds the {size} values of {where} (bottom {list(shape)})")
        if self.axis is not None:
            top_shape = list(shape)
            top_shape[self.axis] = self.top_k
        else:
            top_shape = [1] * max(3, len(shape))
            top_shape[0], top_shape[1], top_shape[2] = shape[0], 2 if self.out_max_val else 1, self.top_k
        top[0].reshape(top_shape)

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.axis is None:
            rows = x.reshape(x.shape[0], -1)
        else:
            rows = np.moveaxis(x, self.axis, -1)
        index = np.broadcast_to(np.arange(rows.shape[-1]), rows.shape)
        # lexsort's last key is the primary one: value descending, then index descending.
        order = np.lexsort((-index, -rows), axis=-1)[..., :self.top_k]
        values = np.take_along_axis(rows, order, axis=-1)
        if self.axis is None:
            parts = [order, values] if self.out_max_val else [order]
            top[0].data[...] = np.stack(parts, axis=1).reshape(top[0].shape)
        else:
            result = values if self.out_max_val else order
            top[0].data[...] = np.moveaxis(result, -1, self.axis)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            raise self.error("has no backward pass; set propagate_down: false for its bottom")
