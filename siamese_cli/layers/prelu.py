"""PReLU: max(x, 0) + a_c * min(x, 0) with a learned slope a per channel (axis 1), or one shared.

The slope blob is (channels,), or a 0-axis scalar with channel_shared, as Caffe stores it.
"""
import numpy as np

from ..blob import Blob
from ..fillers import fill
from ..proto import caffe_pb2
from ._common import kept_input
from .base import NeuronLayer


class PReLU(NeuronLayer):
    type = "PReLU"

    def setup(self, bottom, top):
        p = self.param.prelu_param
        shape = bottom[0].shape
        if len(shape) < 2:
            raise self.error(f"needs a bottom of at least 2 axes (N x C x ...), got shape {list(shape)}")
        self.channel_shared = p.channel_shared
        self.channels = shape[1]
        slope_shape = () if self.channel_shared else (self.channels,)
        filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(type="constant", value=0.25)
        self.blobs = [Blob(slope_shape)]
        self.blobs[0].data[...] = fill(filler, slope_shape, self.rng)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) < 2 or shape[1] != self.channels:
            raise self.error(f"bottom shape {list(shape)} must keep the {self.channels} channels of axis 1")
        super().reshape(bottom, top)

    def _slopes(self, x):
        """The slope broadcast against x: (1, C, 1, ...) or a scalar."""
        slope = self.blobs[0].data
        return slope if self.channel_shared else slope.reshape((1, -1) + (1,) * (x.ndim - 2))

    def forward(self, bottom, top):
        x = bottom[0].data
        self.x = kept_input(bottom, top)
        top[0].data[...] = np.where(x > 0, x, x * self._slopes(x))

    def backward(self, top, propagate_down, bottom):
        x, dy = self.x, top[0].diff
        negative = x <= 0
        # Slope gradient first: in place, the bottom diff below overwrites the top diff.
        grad = np.where(negative, dy * x, np.float32(0))
        if self.channel_shared:
            self.blobs[0].diff += grad.sum(dtype=np.float32)
        else:
            axes = (0,) + tuple(range(2, x.ndim))
            self.blobs[0].diff += grad.sum(axis=axes, dtype=np.float32)
        if propagate_down[0]:
            bottom[0].diff[...] = dy * np.where(negative, self._slopes(x), np.float32(1))
