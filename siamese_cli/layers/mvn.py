"""Caffe's MVN: subtract the mean (and divide by the standard deviation) per sample, or per channel.

The statistics run over each (num, channel) slice, or each num with `across_channels`. eps is added
after the square root: (x - mean) / (std + eps). The backward pass is Caffe's, which leaves out
eps's own chain term: (dy - mean(dy) - y * mean(dy * y)) / (std + eps).
"""
import numpy as np

from ._common import legacy_dim
from .base import Layer


class MVN(Layer):
    type = "MVN"
    num_bottom = 1
    num_top = 1

    def setup(self, bottom, top):
        p = self.param.mvn_param
        self.normalize_variance = p.normalize_variance
        self.across_channels = p.across_channels
        self.eps = np.float32(p.eps)
        self._y = self._std = None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        rows = legacy_dim(self, shape, 0) * (1 if self.across_channels else legacy_dim(self, shape, 1))
        self.rows = (rows, bottom[0].data.size // max(rows, 1))
        top[0].reshape(shape)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.rows)
        out = top[0].data.reshape(self.rows)
        np.subtract(x, x.mean(axis=1, dtype=np.float32, keepdims=True), out=out)
        if self.normalize_variance:
            self._std = np.sqrt(np.square(out).mean(axis=1, dtype=np.float32, keepdims=True)) + self.eps
            out /= self._std
            self._y = out.copy()

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.rows)
        grad = dy - dy.mean(axis=1, dtype=np.float32, keepdims=True)
        if self.normalize_variance:
            y = self._y
            grad -= y * (dy * y).mean(axis=1, dtype=np.float32, keepdims=True)
            grad /= self._std
        bottom[0].diff.reshape(self.rows)[...] = grad
