"""Caffe's LRN: local response normalisation across channels or within each channel.

ACROSS_CHANNELS: scale = k + (alpha / n) * sum of x^2 over n neighbouring channels (zero-padded),
top = x * scale^-beta. WITHIN_CHANNEL: scale = 1 + alpha * (the n x n average of x^2 around each
pixel, zero-padded, always divided by n^2), top = x * scale^-beta (k unused), as Caffe's
split/power/pooling composition computes it.
"""
import numpy as np

from .base import Layer

_ACROSS, _WITHIN = 0, 1


def _window_sum(values, size, axes):
    """Sums over a centred window of odd `size` along each of `axes`, zero-padded at the edges."""
    pad = (size - 1) // 2
    for axis in axes:
        widths = [(0, 0)] * values.ndim
        widths[axis] = (pad, pad)
        padded = np.pad(values, widths)
        length = values.shape[axis]
        index = [slice(None)] * values.ndim
        total = np.zeros(values.shape, np.float32)
        for offset in range(size):
            index[axis] = slice(offset, offset + length)
            total += padded[tuple(index)]
        values = total
    return values


class LRN(Layer):
    type = "LRN"
    num_bottom = 1
    num_top = 1

    def setup(self, bottom, top):
        p = self.param.lrn_param
        self.size = int(p.local_size)
        if self.size <= 0 or self.size % 2 == 0:
            raise self.error(f"lrn_param.local_size must be odd and positive, got {self.size}")
        self.alpha, self.beta, self.k = np.float32(p.alpha), np.float32(p.beta), np.float32(p.k)
        self.region = p.norm_region
        if self.region not in (_ACROSS, _WITHIN):
            raise self.error(f"unknown norm_region {self.region}; use ACROSS_CHANNELS or WITHIN_CHANNEL")
        self._scale = self._input = None

    def reshape(self, bottom, top):
        if len(bottom[0].shape) != 4:
            raise self.error(f"takes 4-D input (N, C, H, W), got shape {list(bottom[0].shape)}")
        top[0].reshape(bottom[0].shape)

    def _window(self, values):
        """The local sum of `values` that the scale uses, times the scale's coefficient."""
        if self.region == _ACROSS:
            return _window_sum(values, self.size, (1,)) * (self.alpha / np.float32(self.size))
        return _window_sum(values, self.size, (2, 3)) * (self.alpha / np.float32(self.size * self.size))

    def forward(self, bottom, top):
        x = bottom[0].data
        offset = self.k if self.region == _ACROSS else np.float32(1)
        scale = self._window(np.square(x)) + offset
        self._scale = scale
        self._input = x.copy() if top[0] is bottom[0] else x
        np.multiply(x, np.power(scale, -self.beta), out=top[0].data)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        # d/dx_i: dy_i * scale_i^-beta - 2 beta x_i * (alpha / n) * window_sum(dy * y / scale)_i;
        # the centred window is its own transpose.
        x, scale, y, dy = self._input, self._scale, top[0].data, top[0].diff
        ratio = self._window(dy * y / scale)
        grad = dy * np.power(scale, -self.beta) - (np.float32(2) * self.beta) * x * ratio
        bottom[0].diff[...] = grad
