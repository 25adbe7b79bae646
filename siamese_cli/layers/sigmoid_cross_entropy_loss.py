"""SigmoidCrossEntropyLoss: cross-entropy of sigmoid(x) against targets t in [0, 1].

Each term, -[t log s(x) + (1 - t) log(1 - s(x))], is computed in the stable form
-x (t - [x >= 0]) + log(1 + exp(x - 2 x [x >= 0])). Targets equal to ignore_label drop out.
The sum is divided as loss_param.normalization says, BATCH_SIZE (N) when unset.
"""
import numpy as np

from ..proto import caffe_pb2
from ._common import check_loss_bottoms, count, loss_normalization, loss_normalizer, sequential_sum
from .base import Layer


class SigmoidCrossEntropyLoss(Layer):
    type = "SigmoidCrossEntropyLoss"
    num_bottom = 2
    num_top = 1
    is_loss = True
    no_gradient_bottoms = (1,)

    def setup(self, bottom, top):
        p = self.param.loss_param
        self.ignore_label = p.ignore_label if p.HasField("ignore_label") else None
        self.normalization = loss_normalization(self, default=caffe_pb2.LossParameter.BATCH_SIZE)

    def reshape(self, bottom, top):
        check_loss_bottoms(self, bottom)
        if bottom[0].count != bottom[1].count:
            raise self.error(f"prediction {list(bottom[0].shape)} and target {list(bottom[1].shape)} "
                             f"must have the same count")
        self.outer = bottom[0].shape[0]
        self.inner = count(bottom[0].shape, 1)
        top[0].reshape(())

    def _valid(self, target):
        if self.ignore_label is None:
            return np.ones(target.shape, bool)
        return target.astype(np.int64) != self.ignore_label

    def forward(self, bottom, top):
        x = bottom[0].data.ravel()
        t = bottom[1].data.ravel()
        valid = self._valid(t)
        positive = (x >= 0).astype(np.float32)
        terms = x * (t - positive) - np.log1p(np.exp(x - np.float32(2) * x * positive))
        self.normalizer = loss_normalizer(self.normalization, self.outer, self.inner, int(valid.sum()))
        top[0].data[...] = -sequential_sum(terms[valid]) / self.normalizer

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        x = bottom[0].data
        t = bottom[1].data.reshape(x.shape)
        one = np.float32(1)
        with np.errstate(over="ignore"):
            grad = one / (one + np.exp(-x)) - t
        grad *= self._valid(t)
        bottom[0].diff[...] = grad * (np.float32(top[0].diff) / self.normalizer)
