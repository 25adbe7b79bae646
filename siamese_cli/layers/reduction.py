"""Reduction: SUM, ASUM (sum of |x|), SUMSQ or MEAN over `axis` and every later axis, times coeff.

The top keeps the axes before `axis` (axis 0, the default: one scalar).
"""
import numpy as np

from ..proto import caffe_pb2
from ._common import canonical_axis, count
from .base import Layer

_OP = caffe_pb2.ReductionParameter


class Reduction(Layer):
    type = "Reduction"
    num_bottom = 1
    num_top = 1

    def setup(self, bottom, top):
        p = self.param.reduction_param
        self.op = p.operation
        self.coeff = np.float32(p.coeff)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.axis = canonical_axis(self, self.param.reduction_param.axis, len(shape))
        self.num, self.dim = count(shape, 0, self.axis), count(shape, self.axis)
        top[0].reshape(shape[:self.axis])
        self.scale = self.coeff / np.float32(self.dim) if self.op == _OP.MEAN else self.coeff

    def forward(self, bottom, top):
        rows = bottom[0].data.reshape(self.num, self.dim)
        if self.op == _OP.ASUM:
            rows = np.abs(rows)
        elif self.op == _OP.SUMSQ:
            rows = rows * rows
        top[0].data[...] = (rows.sum(axis=1, dtype=np.float32) * self.scale).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        dy = top[0].diff.reshape(self.num, 1) * self.scale
        rows = bottom[0].data.reshape(self.num, self.dim)
        if self.op == _OP.ASUM:
            grad = np.sign(rows) * dy
        elif self.op == _OP.SUMSQ:
            grad = rows * (np.float32(2) * dy)
        else:
            grad = np.broadcast_to(dy, rows.shape)
        bottom[0].diff[...] = grad.reshape(bottom[0].shape)
