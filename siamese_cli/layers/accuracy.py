"""Accuracy: the fraction of labels among the top_k scores; optional per-class accuracy as a second top.

Ranking follows Caffe 1.0: scores sorted descending, equal scores ordered by the higher
class index first. With every label ignored the accuracy is 0/0 (NaN), as in Caffe 1.0.
"""
import numpy as np

from ._common import canonical_axis, prediction_layout
from .base import Layer
from .softmax import as_outer_channel_inner


class Accuracy(Layer):
    type = "Accuracy"
    no_gradient_bottoms = (0, 1)
    num_bottom = 2
    min_top = 1
    max_top = 2

    def setup(self, bottom, top):
        p = self.param.accuracy_param
        self.top_k = int(p.top_k)
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if bottom[1].count == 0 or self.top_k > bottom[0].count // bottom[1].count:
            raise self.error(f"top_k {self.top_k} exceeds the number of classes")
        self.axis = canonical_axis(self, self.param.accuracy_param.axis, len(shape))
        self.outer, self.inner = prediction_layout(self, shape, self.axis, bottom[1].count, "label")
        top[0].reshape(())
        if len(top) > 1:
            top[1].reshape((shape[self.axis],))

    def forward(self, bottom, top):
        classes = bottom[0].shape[self.axis]
        scores = as_outer_channel_inner(bottom[0].data, self.axis).transpose(0, 2, 1).reshape(-1, classes)
        labels = bottom[1].data.reshape(-1).astype(np.int64)
        if self.ignore_label is not None:
            keep = labels != self.ignore_label
            scores, labels = scores[keep], labels[keep]
        if ((labels < 0) | (labels >= classes)).any():
            bad = labels[(labels < 0) | (labels >= classes)][0]
            raise self.error(f"label {int(bad)} out of range for {classes} classes")
        rows = np.arange(len(labels))
        own = scores[rows, labels][:, None]
        index = np.arange(classes)[None, :]
        ahead = (scores > own) | ((scores == own) & (index > labels[:, None]))
        hit = ahead.sum(axis=1) < self.top_k
        with np.errstate(invalid="ignore", divide="ignore"):
            top[0].data[...] = np.float32(hit.sum()) / np.float32(len(labels))
            if len(top) > 1:
                seen = np.bincount(labels, minlength=classes).astype(np.float32)
                right = np.bincount(labels[hit], minlength=classes).astype(np.float32)
                top[1].data[...] = np.where(seen == 0, np.float32(0), right / np.where(seen == 0, 1, seen))

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            bottom[0].diff[...] = 0
