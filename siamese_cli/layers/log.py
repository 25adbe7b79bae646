"""Log: log_base(shift + scale * x), base -1 meaning e."""
import numpy as np

from ._common import kept_input
from .base import NeuronLayer
from .exp import log_base


class Log(NeuronLayer):
    type = "Log"

    def setup(self, bottom, top):
        p = self.param.log_param
        self.base_scale = np.float32(1.0 / log_base(self, p.base))
        self.scale = np.float32(p.scale)
        self.shift = np.float32(p.shift)

    def _argument(self, x):
        return x * self.scale + self.shift

    def forward(self, bottom, top):
        self.x = kept_input(bottom, top)
        with np.errstate(divide="ignore", invalid="ignore"):
            y = np.log(self._argument(bottom[0].data))
        if self.base_scale != 1:
            y *= self.base_scale
        top[0].data[...] = y

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            with np.errstate(divide="ignore"):
                bottom[0].diff[...] = top[0].diff * (self.scale * self.base_scale) / self._argument(self.x)
