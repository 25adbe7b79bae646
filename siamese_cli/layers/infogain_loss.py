"""InfogainLoss: softmax along `axis`, then -sum_l H[label, l] log(max(p_l, 1e-20)) per prediction.

H (num_labels x num_labels) comes from infogain_loss_param.source, a BlobProto file, or from a
third bottom; with H the identity this is SoftmaxWithLoss. ignore_label and normalization
(default VALID; the deprecated `normalize` is refused, as Caffe does) follow loss_param. An
optional second top receives the probabilities. Neither labels nor H get a gradient.
"""
import numpy as np

from ..blob import Blob
from ..io.files import read_binary_proto
from ..proto import caffe_pb2
from ._common import canonical_axis, loss_normalization, loss_normalizer, prediction_layout, sequential_sum
from .base import Layer
from .softmax import as_outer_channel_inner, softmax

_LOG_THRESHOLD = np.float32(1e-20)


class InfogainLoss(Layer):
    type = "InfogainLoss"
    min_bottom = 2
    max_bottom = 3
    min_top = 1
    max_top = 2
    is_loss = True
    no_gradient_bottoms = (1, 2)

    def setup(self, bottom, top):
        p = self.param.loss_param
        if p.HasField("normalize"):
            raise self.error('loss_param.normalize is deprecated here; use "normalization"')
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None
        self.normalization = loss_normalization(self)
        self.infogain = None
        if len(bottom) < 3:
            source = self.param.infogain_loss_param.source
            if not source:
                raise self.error("needs infogain_loss_param.source (a .binaryproto of H) or H as a third bottom")
            self.infogain = Blob()
            self.infogain.from_proto(read_binary_proto(source, caffe_pb2.BlobProto()))

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) == 0 or len(bottom[1].shape) == 0 or shape[0] != bottom[1].shape[0]:
            raise self.error(f"bottoms {list(shape)} and {list(bottom[1].shape)} must have the same first dimension")
        self.axis = canonical_axis(self, self.param.infogain_loss_param.axis, len(shape))
        self.outer, self.inner = prediction_layout(self, shape, self.axis, bottom[1].count, "infogain")
        self.num_labels = shape[self.axis]
        h = self._h(bottom)
        if h.size != self.num_labels ** 2:
            raise self.error(f"H has {h.size} values; {self.num_labels} classes need {self.num_labels}^2")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape(shape)

    def _h(self, bottom):
        blob = self.infogain if self.infogain is not None else bottom[2]
        return blob.data.reshape(-1)

    def _labels(self, bottom):
        labels = bottom[1].data.reshape(self.outer, self.inner).astype(np.int64)
        valid = np.ones(labels.shape, bool) if self.ignore_label is None else labels != self.ignore_label
        bad = valid & ((labels < 0) | (labels >= self.num_labels))
        if bad.any():
            raise self.error(f"label {labels[bad][0]} out of range for {self.num_labels} classes")
        return np.where(valid, labels, 0), valid  # ignored labels may lie outside H

    def forward(self, bottom, top):
        self.prob = softmax(bottom[0].data, self.axis)
        h = self._h(bottom).reshape(self.num_labels, self.num_labels)
        labels, valid = self._labels(bottom)
        prob = as_outer_channel_inner(self.prob, self.axis)  # (outer, labels, inner)
        outer, inner = np.nonzero(valid)
        logs = np.log(np.maximum(prob[outer, :, inner], _LOG_THRESHOLD))  # (valid, labels)
        terms = h[labels[outer, inner]] * logs
        self.valid_count = outer.size
        top[0].data[...] = -sequential_sum(terms) / self._normalizer()
        if len(top) > 1:
            top[1].data[...] = self.prob

    def _normalizer(self):
        return loss_normalizer(self.normalization, self.outer, self.inner, self.valid_count)

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        h = self._h(bottom).reshape(self.num_labels, self.num_labels)
        labels, valid = self._labels(bottom)
        prob = as_outer_channel_inner(self.prob, self.axis)
        rows = h[labels]  # (outer, inner, labels): H's row of each prediction's label
        row_sums = rows.sum(axis=2, dtype=np.float32)
        grad = prob * row_sums[:, None, :] - np.moveaxis(rows, 2, 1)
        grad *= valid[:, None, :]
        weight = np.float32(top[0].diff) / self._normalizer()
        bottom[0].diff[...] = (grad * weight).reshape(bottom[0].shape)
