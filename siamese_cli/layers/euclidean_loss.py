"""EuclideanLoss: sum((a - b)^2) / 2N; both bottoms take a gradient (+-(a - b) / N)."""
import numpy as np

from ._common import check_loss_bottoms, count
from .base import Layer


class EuclideanLoss(Layer):
    type = "EuclideanLoss"
    num_bottom = 2
    num_top = 1
    is_loss = True

    def reshape(self, bottom, top):
        check_loss_bottoms(self, bottom)
        a, b = bottom[0].shape, bottom[1].shape
        if count(a, 1) != count(b, 1):
            raise self.error(f"bottoms {list(a)} and {list(b)} must hold the same number of values per item")
        top[0].reshape(())

    def forward(self, bottom, top):
        self.diff = (bottom[0].data - bottom[1].data.reshape(bottom[0].shape)).ravel()
        num = np.float32(bottom[0].shape[0])
        top[0].data[...] = np.dot(self.diff, self.diff) / num / np.float32(2)

    def backward(self, top, propagate_down, bottom):
        for i, sign in ((0, np.float32(1)), (1, np.float32(-1))):
            if propagate_down[i]:
                alpha = sign * np.float32(top[0].diff) / np.float32(bottom[i].shape[0])
                bottom[i].diff[...] = (alpha * self.diff).reshape(bottom[i].shape)
