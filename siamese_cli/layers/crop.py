"""Caffe's Crop: cut bottom[0] to bottom[1]'s shape on every axis from `axis` on, at the given offsets.

Offsets: none (all 0), one (used on every cropped axis) or one per cropped axis. Only bottom[0]
takes a gradient: the top's, placed back at the offsets, zero elsewhere.
"""
import numpy as np

from ._common import canonical_axis
from .base import Layer


class Crop(Layer):
    type = "Crop"
    num_bottom = 2
    num_top = 1
    no_gradient_bottoms = (1,)

    def setup(self, bottom, top):
        p = self.param.crop_param
        ndim = len(bottom[0].shape)
        self.axis = canonical_axis(self, p.axis, ndim)
        self.given = list(p.offset)
        if len(self.given) > 1 and self.axis + len(self.given) != ndim:
            raise self.error(f"{len(self.given)} offsets given for {ndim - self.axis} cropped axes "
                             f"(axis {self.axis} on of a {ndim}-axis blob); give one offset or one per axis")

    def reshape(self, bottom, top):
        source, reference = bottom[0].shape, bottom[1].shape
        if len(reference) != len(source):
            raise self.error(f"bottoms have {len(source)} and {len(reference)} axes; they need the same number")
        shape, self.window = [], []
        for i, size in enumerate(source):
            if i < self.axis:
                shape.append(size)
                self.window.append(slice(None))
                continue
            offset = self.given[0] if len(self.given) == 1 else (self.given[i - self.axis] if self.given else 0)
            if offset + reference[i] > size:
                raise self.error(f"crop of axis {i} to size {reference[i]} at offset {offset} runs past its size {size}")
            shape.append(reference[i])
            self.window.append(slice(offset, offset + reference[i]))
        self.window = tuple(self.window)
        top[0].reshape(shape)

    def forward(self, bottom, top):
        np.copyto(top[0].data, bottom[0].data[self.window])

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0
            bottom[0].diff[self.window] = top[0].diff
