"""Exp: base ^ (shift + scale * x), base -1 meaning e; computed as outer * exp(inner * x)."""
import numpy as np

from .base import NeuronLayer


def log_base(layer, base):
    """ln(base) for Exp and Log: 1 for Caffe's base -1 (e); any other base must be positive."""
    if base == -1:
        return 1.0
    if base <= 0:
        raise layer.error(f"base must be positive or -1 (for e), got {base:g}")
    return float(np.log(base))


class Exp(NeuronLayer):
    type = "Exp"

    def setup(self, bottom, top):
        p = self.param.exp_param
        ln_base = log_base(self, p.base)
        self.inner_scale = np.float32(ln_base * p.scale)
        self.outer_scale = np.float32(1.0 if p.shift == 0 else np.exp(ln_base * p.shift))

    def forward(self, bottom, top):
        y = np.exp(bottom[0].data * self.inner_scale)
        if self.outer_scale != 1:
            y *= self.outer_scale
        top[0].data[...] = y

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = top[0].diff * top[0].data * self.inner_scale
