"""Dropout: in TRAIN, zero each element with probability dropout_ratio and scale the rest
by 1 / (1 - ratio); in TEST, the identity. The layer reads `self.phase`, so the net must
build it with the phase of the net it belongs to."""
import numpy as np

from .base import NeuronLayer


class Dropout(NeuronLayer):
    type = "Dropout"

    def setup(self, bottom, top):
        ratio = np.float32(self.param.dropout_param.dropout_ratio)
        if not 0 <= ratio < 1:
            raise self.error(f"dropout_ratio must be in [0, 1), got {float(ratio)}")
        self.ratio = ratio
        self.scale = np.float32(1.0 / (1.0 - float(ratio)))
        self.mask = None

    def forward(self, bottom, top):
        x = bottom[0].data
        if self.phase == "TRAIN":
            if self.rng is None:
                raise self.error("needs a random generator in TRAIN phase; build the layer with rng=")
            self.mask = self.rng.random(x.shape, dtype=np.float32) < np.float32(1) - self.ratio
            top[0].data[...] = x * self.mask * self.scale
        elif top[0] is not bottom[0]:
            top[0].data[...] = x

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self.phase == "TRAIN":
            bottom[0].diff[...] = top[0].diff * self.mask * self.scale
        elif top[0] is not bottom[0]:
            bottom[0].diff[...] = top[0].diff
