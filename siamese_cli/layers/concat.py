"""Concat: join bottoms along one axis (axis, or the older concat_dim)."""
from ._common import canonical_axis
from .base import Layer


class Concat(Layer):
    type = "Concat"
    min_bottom = 1
    num_top = 1

    def setup(self, bottom, top):
        p = self.param.concat_param
        if p.HasField("axis") and p.HasField("concat_dim"):
            raise self.error("set either axis or concat_dim in concat_param, not both")

    def reshape(self, bottom, top):
        p = self.param.concat_param
        first = bottom[0].shape
        if p.HasField("concat_dim"):
            if p.concat_dim >= len(first):
                raise self.error(f"concat_dim {p.concat_dim} out of range for a {len(first)}-axis blob")
            self.axis = int(p.concat_dim)
        else:
            self.axis = canonical_axis(self, p.axis, len(first))
        total = 0
        for i, blob in enumerate(bottom):
            shape = blob.shape
            if len(shape) != len(first):
                raise self.error(f"all bottoms need the same number of axes; bottom {i} has shape {list(shape)}")
            if shape[: self.axis] != first[: self.axis] or shape[self.axis + 1:] != first[self.axis + 1:]:
                raise self.error(
                    f"bottoms must match except on axis {self.axis}: {list(first)} vs {list(shape)} (bottom {i})"
                )
            total += shape[self.axis]
        self.offsets = [0]
        for blob in bottom:
            self.offsets.append(self.offsets[-1] + blob.shape[self.axis])
        top[0].reshape(first[: self.axis] + (total,) + first[self.axis + 1:])

    def _part(self, array, i):
        index = [slice(None)] * array.ndim
        index[self.axis] = slice(self.offsets[i], self.offsets[i + 1])
        return array[tuple(index)]

    def forward(self, bottom, top):
        for i, blob in enumerate(bottom):
            self._part(top[0].data, i)[...] = blob.data

    def backward(self, top, propagate_down, bottom):
        for i, blob in enumerate(bottom):
            if propagate_down[i]:
                blob.diff[...] = self._part(top[0].diff, i)
