"""SoftmaxWithLoss: softmax then multinomial logistic loss, normalised as loss_param says.

An optional second top receives the probabilities. Labels get no gradient.
"""
import numpy as np

from ._common import loss_normalization, loss_normalizer, prediction_layout, sequential_sum
from .base import Layer
from .softmax import as_outer_channel_inner, softmax, softmax_axis

_FLT_MIN = np.float32(np.finfo(np.float32).tiny)


class SoftmaxWithLoss(Layer):
    type = "SoftmaxWithLoss"
    no_gradient_bottoms = (1,)
    num_bottom = 2
    min_top = 1
    max_top = 2
    is_loss = True

    def setup(self, bottom, top):
        p = self.param.loss_param
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None
        self.normalization = loss_normalization(self)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        self.axis = softmax_axis(self, shape)
        self.outer, self.inner = prediction_layout(self, shape, self.axis, bottom[1].count, "softmax")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(shape)

    def _labels(self, bottom):
        """Integer labels as (outer, inner) and the mask of those that count."""
        labels = bottom[1].data.reshape(self.outer, self.inner).astype(np.int64)
        valid = np.ones(labels.shape, bool) if self.ignore_label is None else labels != self.ignore_label
        channels = bottom[0].shape[self.axis]
        bad = valid & ((labels < 0) | (labels >= channels))
        if bad.any():
            raise self.error(
                f"label {int(labels[bad][0])} out of range for {channels} classes; labels must be 0..{channels - 1}"
            )
        return labels, valid

    def _normalizer(self, valid_count):
        return loss_normalizer(self.normalization, self.outer, self.inner, valid_count)

    def forward(self, bottom, top):
        self.prob = softmax(bottom[0].data, self.axis)
        labels, valid = self._labels(bottom)
        prob = as_outer_channel_inner(self.prob, self.axis)
        outer, inner = np.nonzero(valid)
        picked = prob[outer, labels[outer, inner], inner]
        terms = -np.log(np.maximum(picked, _FLT_MIN))
        top[0].data[...] = sequential_sum(terms) / self._normalizer(int(valid.sum()))
        if len(top) > 1:
            top[1].data[...] = self.prob

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        labels, valid = self._labels(bottom)
        grad = as_outer_channel_inner(self.prob.copy(), self.axis)
        outer, inner = np.nonzero(valid)
        grad[outer, labels[outer, inner], inner] -= np.float32(1)
        grad *= valid[:, None, :]
        weight = np.float32(top[0].diff) / self._normalizer(int(valid.sum()))
        bottom[0].diff[...] = (grad * weight).reshape(bottom[0].shape)
