"""Caffe's Scale layer: multiply by a learned blob (or a second bottom) broadcast over the first bottom.

The layout is Bias's: the factor covers bottom axes [axis, axis + its axes). The learned factor
starts at 1 unless a filler is given; `bias_term` adds a learned bias of the factor's shape
(blobs: [scale, bias], or [bias] when the factor is the second bottom).
"""
import numpy as np

from .. import accel
from ..blob import Blob
from ..fillers import fill
from ..proto import caffe_pb2
from ._common import channel_affine
from .base import Layer
from .bias import broadcast_layout, param_shape, sum_to_operand


class Scale(Layer):
    type = "Scale"
    min_bottom = 1
    max_bottom = 2
    num_top = 1

    def setup(self, bottom, top):
        p = self.param.scale_param
        self.blobs = []
        if len(bottom) == 1:
            shape = param_shape(self, bottom[0].shape, p.axis, p.num_axes, "scale_param")
            filler = p.filler if p.HasField("filler") else caffe_pb2.FillerParameter(type="constant", value=1)
            self.blobs.append(self._filled(filler, shape))
        else:
            shape = bottom[1].shape
        self.bias_term = p.bias_term
        if self.bias_term:
            self.blobs.append(self._filled(p.bias_filler, shape))
        self._input = None
        self.kernels = accel.kernels()

    def _filled(self, filler, shape):
        blob = Blob(shape)
        blob.data[...] = fill(filler, shape, self.rng)
        return blob

    def _factor(self, bottom):
        return bottom[1] if len(bottom) > 1 else self.blobs[0]

    def reshape(self, bottom, top):
        factor = self._factor(bottom)
        self.layout = broadcast_layout(self, bottom[0].shape, factor.shape, self.param.scale_param.axis)
        if self.bias_term and self.blobs[-1].shape != factor.shape:
            raise self.error(f"bias shape {list(self.blobs[-1].shape)} differs from the scale's {list(factor.shape)}")
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.layout)
        # The factor's gradient needs the input; in place it is about to be overwritten.
        if top[0] is bottom[0] and self.needs_backward:
            if self._input is None or self._input.shape != x.shape:
                self._input = np.empty(x.shape, np.float32)
            np.copyto(self._input, x)
        else:
            self._input = None
        out = top[0].data.reshape(self.layout)
        bias = self.blobs[-1].data.reshape(-1) if self.bias_term else None
        channel_affine(self.kernels, x, self._factor(bottom).data.reshape(-1), bias, out)

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.layout)
        if self.bias_term:
            self.blobs[-1].diff += sum_to_operand(dy, self.layout).reshape(self.blobs[-1].shape)
        x = self._input if self._input is not None else bottom[0].data.reshape(self.layout)
        factor = self._factor(bottom)
        if len(bottom) > 1:
            if len(propagate_down) > 1 and propagate_down[1]:
                bottom[1].diff[...] = sum_to_operand(dy * x, self.layout).reshape(factor.shape)
        else:
            factor.diff += sum_to_operand(dy * x, self.layout).reshape(factor.shape)
        if propagate_down[0]:
            bottom[0].diff.reshape(self.layout)[...] = dy * factor.data.reshape(1, -1, 1)
