"""Clip: x limited to [min, max]; the gradient passes where min <= x <= max."""
import numpy as np

from ._common import kept_input
from .base import NeuronLayer


class Clip(NeuronLayer):
    type = "Clip"

    def setup(self, bottom, top):
        p = self.param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            raise self.error("clip_param needs both min and max")
        self.min, self.max = np.float32(p.min), np.float32(p.max)
        if self.min > self.max:
            raise self.error(f"clip_param min {p.min:g} is above max {p.max:g}")

    def forward(self, bottom, top):
        self.x = kept_input(bottom, top)
        np.clip(bottom[0].data, self.min, self.max, out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            inside = (self.x >= self.min) & (self.x <= self.max)
            bottom[0].diff[...] = top[0].diff * inside
