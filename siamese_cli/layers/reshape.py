"""Reshape: a new shape for the same values; 0 copies a bottom dimension, -1 is inferred.

`axis` and `num_axes` choose the range of bottom axes the new shape replaces.
"""
from ._common import count
from .base import Layer


class Reshape(Layer):
    type = "Reshape"
    num_bottom = 1
    num_top = 1

    def setup(self, bottom, top):
        self.dims = [int(d) for d in self.param.reshape_param.shape.dim]
        if self.dims.count(-1) > 1:
            raise self.error(f"shape {self.dims} has more than one -1; at most one dimension can be inferred")
        if any(d < -1 for d in self.dims):
            raise self.error(f"shape {self.dims}: -1 is the only allowed negative dimension")

    def reshape(self, bottom, top):
        if top[0] is bottom[0]:
            raise self.error("cannot run in place; give the top its own name")
        shape = bottom[0].shape
        p = self.param.reshape_param
        start = p.axis if p.axis >= 0 else len(shape) + p.axis + 1
        if not 0 <= start <= len(shape):
            raise self.error(f"axis {p.axis} out of range for a {len(shape)}-axis blob")
        if p.num_axes < -1:
            raise self.error(f"num_axes must be >= 0, or -1 for all, got {p.num_axes}")
        end = len(shape) if p.num_axes == -1 else start + p.num_axes
        if end > len(shape):
            raise self.error(f"axis + num_axes = {end} is beyond the bottom's {len(shape)} axes")
        middle = []
        for i, dim in enumerate(self.dims):
            if dim == 0:
                if start + i >= len(shape):
                    raise self.error(f"shape has a 0 at position {i} but the bottom has no axis {start + i} to copy")
                dim = shape[start + i]
            middle.append(dim)
        if -1 in middle:
            known = count(shape, 0, start) * count(shape, end) * count([d for d in middle if d != -1])
            if known == 0 or bottom[0].count % known:
                raise self.error(
                    f"cannot infer the -1 in {self.dims}: bottom count {bottom[0].count} is not divisible by {known}"
                )
            middle[middle.index(-1)] = bottom[0].count // known
        new_shape = shape[:start] + tuple(middle) + shape[end:]
        if count(new_shape) != bottom[0].count:
            raise self.error(
                f"shape {list(new_shape)} holds {count(new_shape)} values, the bottom {list(shape)} "
                f"holds {bottom[0].count}"
            )
        top[0].reshape(new_shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data.reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff.reshape(bottom[0].shape)
