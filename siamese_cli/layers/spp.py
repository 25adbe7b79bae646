"""Caffe's SPP (spatial pyramid pooling): pool into 1, 2, 4, ... bins per side, flatten, concatenate.

Level l has 2^l bins per side: kernel ceil(H / 2^l), stride = kernel, pad (kernel 2^l - H + 1) / 2,
through Caffe's Pooling (its output-size rule included). The top is (N, C * sum of bins^2); with
pyramid_height 1 it is the single level's pooled (N, C, 1, 1) blob, as in Caffe.
"""

from ..blob import Blob
from ..proto import caffe_pb2
from .base import Layer
from .pooling import Pooling

_POOL_NAMES = {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}


class SPP(Layer):
    type = "SPP"
    num_bottom = 1
    num_top = 1

    def setup(self, bottom, top):
        p = self.param.spp_param
        self.height = int(p.pyramid_height)
        if self.height <= 0:
            raise self.error(f"spp_param.pyramid_height must be positive, got {self.height}")
        self.pool = p.pool
        self._shape = None

    def _level(self, level, h, w):
        bins = 2 ** level
        kh, kw = -(-h // bins), -(-w // bins)
        param = caffe_pb2.LayerParameter(name=f"{self.name}_level{level}", type="Pooling")
        q = param.pooling_param
        q.pool = self.pool
        q.kernel_h, q.kernel_w, q.stride_h, q.stride_w = kh, kw, kh, kw
        q.pad_h, q.pad_w = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        return Pooling(param, phase=self.phase)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.error(f"takes 4-D input (N, C, H, W), got shape {list(shape)}")
        if shape != self._shape:
            n, c, h, w = shape
            self.levels, self.outputs = [], []
            for level in range(self.height):
                pooling, out = self._level(level, h, w), Blob()
                pooling.setup(bottom, [out])
                self.levels.append(pooling)
                self.outputs.append(out)
            self._shape = shape
        for pooling, out in zip(self.levels, self.outputs):
            pooling.reshape(bottom, [out])
        if self.height == 1:
            top[0].reshape(self.outputs[0].shape)
        else:
            top[0].reshape((shape[0], sum(out.count // shape[0] for out in self.outputs)))

    def forward(self, bottom, top):
        start = 0
        flat = top[0].data.reshape(bottom[0].shape[0], -1)
        for pooling, out in zip(self.levels, self.outputs):
            pooling.forward(bottom, [out])
            width = out.count // out.shape[0]
            flat[:, start:start + width] = out.data.reshape(out.shape[0], -1)
            start += width

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        start, total = 0, None
        flat = top[0].diff.reshape(bottom[0].shape[0], -1)
        scratch = Blob(bottom[0].shape)
        scratch.data = bottom[0].data
        for pooling, out in zip(self.levels, self.outputs):
            width = out.count // out.shape[0]
            out.diff[...] = flat[:, start:start + width].reshape(out.shape)
            start += width
            pooling.backward([out], [True], [scratch])
            total = scratch.diff.copy() if total is None else total + scratch.diff
        bottom[0].diff[...] = total
