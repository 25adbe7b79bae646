"""Caffe's BatchNorm: normalise each channel by its mean and variance, with no learned scale or shift.

Three blobs hold running sums: mean, variance and a one-element scale factor s; the statistics
used in global mode are blob / s (0 when s is 0). In training mode the batch statistics (over N
and every axis after the channels, biased variance) normalise, and the sums are updated as
s <- f s + 1, mean <- batch_mean + f mean, var <- m / (m - 1) batch_var + f var. The blobs are
statistics, not parameters: the net gives them lr_mult 0, and a non-zero lr_mult is refused.
"""
import numpy as np

from .. import accel
from ..blob import Blob
from ._common import channel_affine
from .base import Layer


class BatchNorm(Layer):
    type = "BatchNorm"
    num_bottom = 1
    num_top = 1
    frozen_params = True

    def setup(self, bottom, top):
        p = self.param.batch_norm_param
        self.use_global_stats = p.use_global_stats if p.HasField("use_global_stats") else self.phase == "TEST"
        self.fraction = np.float32(p.moving_average_fraction)
        self.eps = np.float32(p.eps)
        shape = bottom[0].shape
        self.channels = 1 if len(shape) == 1 else shape[1]
        self.blobs = [Blob((self.channels,)), Blob((self.channels,)), Blob((1,))]
        for k, spec in enumerate(self.param.param[:3]):
            if spec.lr_mult != 0:
                raise self.error(f"param {k} has lr_mult {spec.lr_mult:g}: BatchNorm's blobs are running statistics, "
                                 f"not learned; give lr_mult: 0 or no param at all")
        self._norm = self._std = None
        self.kernels = accel.kernels()

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) > 1 and shape[1] != self.channels:
            raise self.error(f"input has {shape[1]} channels, the statistics have {self.channels}")
        top[0].reshape(shape)

    def _grouped(self, array):
        """(N, C, rest) view: the statistics are over axes 0 and 2."""
        return array.reshape(array.shape[0], self.channels, -1)

    def forward(self, bottom, top):
        x = self._grouped(bottom[0].data)
        if self.use_global_stats:
            factor = self.blobs[2].data[0]
            factor = np.float32(0) if factor == 0 else np.float32(1) / factor
            mean = self.blobs[0].data * factor
            variance = self.blobs[1].data * factor
        else:
            mean = x.mean(axis=(0, 2), dtype=np.float32)
            centred = x - mean[:, None]
            variance = np.square(centred).mean(axis=(0, 2), dtype=np.float32)
            m = x.size // self.channels
            correction = np.float32(m / (m - 1)) if m > 1 else np.float32(1)
            self.blobs[2].data *= self.fraction
            self.blobs[2].data += 1
            self.blobs[0].data[...] = mean + self.fraction * self.blobs[0].data
            self.blobs[1].data[...] = correction * variance + self.fraction * self.blobs[1].data
        std = np.sqrt(variance + self.eps)
        out = self._grouped(top[0].data)
        inverse = np.float32(1) / std
        # (x - mean) / std as one scaling and one shift (adding the negated shift equals subtracting it exactly)
        channel_affine(self.kernels, x, inverse, -(mean * inverse), out)
        self._std = std
        # Backward needs the normalised values; a later in-place layer may overwrite the top.
        self._norm = None if self.use_global_stats else out.copy()

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = self._grouped(top[0].diff)
        inverse = (np.float32(1) / self._std)[:, None]
        if self.use_global_stats:
            grad = dy * inverse
        else:
            # (dy - mean(dy) - mean(dy * y) * y) / std, the means over N and the spatial axes.
            y = self._norm
            mean_dy = dy.mean(axis=(0, 2), dtype=np.float32)[:, None]
            mean_dy_y = (dy * y).mean(axis=(0, 2), dtype=np.float32)[:, None]
            grad = (dy - mean_dy - mean_dy_y * y) * inverse
        self._grouped(bottom[0].diff)[...] = grad
