"""Filter: keeps the items (along axis 0) whose selector value is non-zero.

Bottoms are the K blobs to filter, then the selector (N, or N x 1 x ...); the K tops have
as many items as were selected, so their batch size changes from pass to pass. The first
reshape, before any selector data exists, keeps the whole batch as Caffe does. Backward
returns the top gradient to the kept items and zero to the others; the selector gets none.
"""
import numpy as np

from .base import Layer


class Filter(Layer):
    type = "Filter"
    min_bottom = 2
    min_top = 1

    def check_counts(self, bottom, top):
        super().check_counts(bottom, top)
        if len(top) != len(bottom) - 1:
            raise self.error(f"needs one top per filtered bottom ({len(bottom) - 1}), got {len(top)}")

    def allow_backward(self, index):
        return index != self.selector

    def setup(self, bottom, top):
        self.selector = len(bottom) - 1
        self.first_reshape = True

    def reshape(self, bottom, top):
        selector = bottom[self.selector]
        if len(selector.shape) == 0 or any(d != 1 for d in selector.shape[1:]):
            raise self.error(f"the selector (last bottom) must be N or N x 1 x ..., got shape {list(selector.shape)}")
        for i, blob in enumerate(bottom[:-1]):
            if len(blob.shape) == 0 or blob.shape[0] != selector.shape[0]:
                raise self.error(f"bottom {i} has shape {list(blob.shape)}, but the selector has "
                                 f"{selector.shape[0]} items; axis 0 must match")
        self.kept = np.flatnonzero(selector.data.reshape(-1))
        items = selector.shape[0] if self.first_reshape else self.kept.size
        self.first_reshape = False
        for blob, out in zip(bottom, top):
            out.reshape((items,) + tuple(blob.shape[1:]))

    def forward(self, bottom, top):
        for blob, out in zip(bottom, top):
            np.take(blob.data, self.kept, axis=0, out=out.data)

    def backward(self, top, propagate_down, bottom):
        for i, (out, blob) in enumerate(zip(top, bottom)):
            if propagate_down[i]:
                blob.diff[...] = 0
                blob.diff[self.kept] = out.diff
