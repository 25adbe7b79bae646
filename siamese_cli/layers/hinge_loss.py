"""HingeLoss: one-vs-all hinge, sum_n sum_k max(0, 1 + t_nk x_nk) / N with t = -1 for the true class
and +1 for the others; L2 squares each term. Labels get no gradient."""
import numpy as np

from ..proto import caffe_pb2
from ._common import check_loss_bottoms, legacy_dim
from .base import Layer

_NORM = caffe_pb2.HingeLossParameter


class HingeLoss(Layer):
    type = "HingeLoss"
    num_bottom = 2
    num_top = 1
    is_loss = True
    no_gradient_bottoms = (1,)

    def setup(self, bottom, top):
        self.norm = self.param.hinge_loss_param.norm

    def reshape(self, bottom, top):
        check_loss_bottoms(self, bottom)
        legacy_dim(self, bottom[0].shape, 0)
        if bottom[1].count != bottom[0].shape[0]:
            raise self.error(f"needs one label per item ({bottom[0].shape[0]}), got shape {list(bottom[1].shape)}")
        top[0].reshape(())

    def forward(self, bottom, top):
        num = bottom[0].shape[0]
        scores = bottom[0].data.reshape(num, -1)
        labels = bottom[1].data.reshape(num).astype(np.int64)
        if ((labels < 0) | (labels >= scores.shape[1])).any():
            bad = labels[(labels < 0) | (labels >= scores.shape[1])][0]
            raise self.error(f"label {bad} out of range for {scores.shape[1]} classes")
        self.sign = np.ones(scores.shape, np.float32)
        self.sign[np.arange(num), labels] = -1
        self.margin = np.maximum(np.float32(0), np.float32(1) + self.sign * scores)
        flat = self.margin.ravel()
        total = flat.sum(dtype=np.float32) if self.norm == _NORM.L1 else np.dot(flat, flat)
        top[0].data[...] = total / np.float32(num)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        num = bottom[0].shape[0]
        weight = np.float32(top[0].diff) / np.float32(num)
        if self.norm == _NORM.L1:
            grad = self.sign * (self.margin > 0) * weight
        else:
            grad = self.sign * self.margin * (np.float32(2) * weight)
        bottom[0].diff[...] = grad.reshape(bottom[0].shape)
