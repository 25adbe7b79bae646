"""Power: (shift + scale * x) ^ power, with Caffe's special cases for the constant and linear forms."""
import numpy as np

from .base import NeuronLayer


class Power(NeuronLayer):
    type = "Power"

    def setup(self, bottom, top):
        p = self.param.power_param
        self.power = np.float32(p.power)
        self.scale = np.float32(p.scale)
        self.shift = np.float32(p.shift)
        self.diff_scale = self.power * self.scale
        self._input = None

    def forward(self, bottom, top):
        x = bottom[0].data
        # Backward needs the input; in place it is about to be overwritten.
        self._input = x.copy() if top[0] is bottom[0] else None
        out = top[0].data
        if self.diff_scale == 0:
            out[...] = 1 if self.power == 0 else np.power(self.shift, self.power)
            return
        value = x * self.scale if self.scale != 1 else x.copy()
        if self.shift != 0:
            value += self.shift
        if self.power != 1:
            value = np.power(value, self.power)
        out[...] = value

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = self._input if self._input is not None else bottom[0].data
        y = top[0].data
        # In place, bottom diff is top diff: build the gradient aside, then write it.
        if self.diff_scale == 0 or self.power == 1:
            grad = np.full(y.shape, self.diff_scale, np.float32)
        elif self.power == 2:
            # d/dx (shift + scale x)^2 = diff_scale * (scale x + shift)
            grad = (self.diff_scale * self.scale) * x
            if self.shift != 0:
                grad += self.diff_scale * self.shift
        elif self.shift == 0:
            # d/dx (scale x)^p = p * y / x
            with np.errstate(divide="ignore", invalid="ignore"):
                grad = (y / x) * self.power
        else:
            base = x * self.scale if self.scale != 1 else x.copy()
            base += self.shift
            with np.errstate(divide="ignore", invalid="ignore"):
                grad = y / base
            if self.diff_scale != 1:
                grad *= self.diff_scale
        if self.diff_scale != 0:
            grad *= top[0].diff
        bottom[0].diff[...] = grad
