"""Slice: cut one blob along an axis into several tops (copies), at slice_point or in equal parts."""
import numpy as np

from ._common import canonical_axis
from .base import Layer


class Slice(Layer):
    type = "Slice"
    num_bottom = 1
    min_top = 1

    def setup(self, bottom, top):
        p = self.param.slice_param
        if p.HasField("axis") and p.HasField("slice_dim"):
            raise self.error("set either axis or slice_dim in slice_param, not both")
        self.slice_points = [int(v) for v in p.slice_point]

    def _axis(self, num_axes):
        p = self.param.slice_param
        if p.HasField("slice_dim"):
            if p.slice_dim >= num_axes:
                raise self.error(f"slice_dim {p.slice_dim} out of range for a {num_axes}-axis blob")
            return int(p.slice_dim)
        return canonical_axis(self, p.axis, num_axes)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.axis = self._axis(len(shape))
        length = shape[self.axis]
        if self.slice_points:
            if len(self.slice_points) != len(top) - 1:
                raise self.error(
                    f"{len(self.slice_points)} slice_point(s) for {len(top)} tops; give one fewer than the tops"
                )
            bounds = [0] + self.slice_points + [length]
            sizes = [b - a for a, b in zip(bounds, bounds[1:])]
            if any(size <= 0 for size in sizes):
                raise self.error(
                    f"slice_point {self.slice_points} must increase strictly within 1..{length - 1} "
                    f"(axis {self.axis} has size {length})"
                )
        else:
            if length % len(top):
                raise self.error(
                    f"{len(top)} tops do not evenly divide axis {self.axis} of size {length}; give slice_point"
                )
            sizes = [length // len(top)] * len(top)
        self.offsets = np.cumsum([0] + sizes).tolist()
        for blob, size in zip(top, sizes):
            blob.reshape(shape[: self.axis] + (size,) + shape[self.axis + 1:])

    def _part(self, array, i):
        index = [slice(None)] * array.ndim
        index[self.axis] = slice(self.offsets[i], self.offsets[i + 1])
        return array[tuple(index)]

    def forward(self, bottom, top):
        for i, blob in enumerate(top):
            blob.data[...] = self._part(bottom[0].data, i)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            for i, blob in enumerate(top):
                self._part(bottom[0].diff, i)[...] = blob.diff
