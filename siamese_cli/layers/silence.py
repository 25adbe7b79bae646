"""Silence: swallows its bottoms so they count as used; gives them zero gradient."""
from .base import Layer


class Silence(Layer):
    type = "Silence"
    min_bottom = 1
    num_top = 0

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        for blob, down in zip(bottom, propagate_down):
            if down:
                blob.diff[...] = 0
