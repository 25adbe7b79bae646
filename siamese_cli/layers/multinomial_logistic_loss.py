"""MultinomialLogisticLoss: -sum_n log(max(p[n, label_n], 1e-20)) / N over given probabilities."""
import numpy as np

from ._common import check_loss_bottoms, legacy_dim, sequential_sum
from .base import Layer

_LOG_THRESHOLD = np.float32(1e-20)


class MultinomialLogisticLoss(Layer):
    type = "MultinomialLogisticLoss"
    num_bottom = 2
    num_top = 1
    is_loss = True
    no_gradient_bottoms = (1,)

    def reshape(self, bottom, top):
        check_loss_bottoms(self, bottom)
        legacy_dim(self, bottom[0].shape, 0)
        if any(legacy_dim(self, bottom[1].shape, i) != 1 for i in (1, 2, 3)):
            raise self.error(f"the label must be N x 1 x 1 x 1, got shape {list(bottom[1].shape)}")
        top[0].reshape(())

    def _picked(self, bottom):
        num = bottom[0].shape[0]
        prob = bottom[0].data.reshape(num, -1)
        labels = bottom[1].data.reshape(num).astype(np.int64)
        bad = (labels < 0) | (labels >= prob.shape[1])
        if bad.any():
            raise self.error(f"label {labels[bad][0]} out of range for {prob.shape[1]} classes")
        return labels, np.maximum(prob[np.arange(num), labels], _LOG_THRESHOLD)

    def forward(self, bottom, top):
        _, picked = self._picked(bottom)
        top[0].data[...] = -sequential_sum(np.log(picked)) / np.float32(bottom[0].shape[0])

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        num = bottom[0].shape[0]
        labels, picked = self._picked(bottom)
        grad = np.zeros((num, bottom[0].count // num), np.float32)
        grad[np.arange(num), labels] = -np.float32(top[0].diff) / np.float32(num) / picked
        bottom[0].diff[...] = grad.reshape(bottom[0].shape)
