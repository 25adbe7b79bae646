"""Tile: the block from `axis` on, repeated `tiles` times along `axis`; backward sums the copies."""
import numpy as np

from ._common import canonical_axis, count
from .base import Layer


class Tile(Layer):
    type = "Tile"
    num_bottom = 1
    num_top = 1

    def setup(self, bottom, top):
        p = self.param.tile_param
        if not p.HasField("tiles") or p.tiles <= 0:
            raise self.error("tile_param.tiles must be given and positive")
        self.tiles = int(p.tiles)

    def reshape(self, bottom, top):
        shape = list(bottom[0].shape)
        self.axis = canonical_axis(self, self.param.tile_param.axis, len(shape))
        self.outer, self.inner = count(shape, 0, self.axis), count(shape, self.axis)
        shape[self.axis] *= self.tiles
        top[0].reshape(shape)

    def forward(self, bottom, top):
        blocks = bottom[0].data.reshape(self.outer, 1, self.inner)
        top[0].data.reshape(self.outer, self.tiles, self.inner)[...] = blocks

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            copies = top[0].diff.reshape(self.outer, self.tiles, self.inner)
            bottom[0].diff[...] = copies.sum(axis=1, dtype=np.float32).reshape(bottom[0].shape)
