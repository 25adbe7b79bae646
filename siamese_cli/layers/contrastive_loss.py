"""ContrastiveLoss (Hadsell, Chopra & LeCun 2006) with Caffe 1.0's arithmetic.

loss = 1/(2N) sum_i [ y_i d_i^2 + (1 - y_i) max(margin - d_i, 0)^2 ],  d_i = ||a_i - b_i||;
legacy_version uses max(margin - d_i^2, 0) for dissimilar pairs. A label is similar when its
integer part is non-zero. Gradients go to a and b only, with Caffe's 1e-4 in the denominator.
"""
import numpy as np

from ._common import legacy_dim, sequential_sum
from .base import Layer

_EPSILON = np.float32(1e-4)


class ContrastiveLoss(Layer):
    type = "ContrastiveLoss"
    no_gradient_bottoms = (2,)
    num_bottom = 3
    num_top = 1
    is_loss = True

    def setup(self, bottom, top):
        p = self.param.contrastive_loss_param
        self.margin = np.float32(p.margin)
        self.legacy = p.legacy_version

    def reshape(self, bottom, top):
        a, b, y = (blob.shape for blob in bottom)
        for name, shape in (("a", a), ("b", b)):
            if legacy_dim(self, shape, 2) != 1 or legacy_dim(self, shape, 3) != 1:
                raise self.error(f"bottom {name} must be N x C (x 1 x 1), got shape {list(shape)}")
        if len(a) == 0 or len(b) == 0 or a[0] != b[0] or legacy_dim(self, a, 1) != legacy_dim(self, b, 1):
            raise self.error(f"bottoms a {list(a)} and b {list(b)} must have the same N x C shape")
        if any(legacy_dim(self, y, i) != 1 for i in (1, 2, 3)) or int(np.prod(y)) != a[0]:
            raise self.error(f"the similarity label must hold one value per pair ({a[0]}), got shape {list(y)}")
        top[0].reshape(())

    def forward(self, bottom, top):
        n = bottom[0].shape[0]
        self.diff = (bottom[0].data - bottom[1].data).reshape(n, -1)
        self.dist_sq = np.einsum("ij,ij->i", self.diff, self.diff)
        self.similar = bottom[2].data.reshape(n).astype(np.int64) != 0
        if self.legacy:
            dissimilar = np.maximum(self.margin - self.dist_sq, np.float32(0))
        else:
            dissimilar = np.maximum(self.margin - np.sqrt(self.dist_sq), np.float32(0))
            dissimilar = dissimilar * dissimilar
        terms = np.where(self.similar, self.dist_sq, dissimilar)
        top[0].data[...] = sequential_sum(terms) / np.float32(n) / np.float32(2)

    def backward(self, top, propagate_down, bottom):
        n = bottom[0].shape[0]
        if self.legacy:
            mdist = self.margin - self.dist_sq
        else:
            dist = np.sqrt(self.dist_sq)
            mdist = self.margin - dist
        for i, sign in ((0, np.float32(1)), (1, np.float32(-1))):
            if not propagate_down[i]:
                continue
            alpha = sign * np.float32(top[0].diff) / np.float32(n)
            if self.legacy:
                beta = np.full(n, -alpha, np.float32)
            else:
                beta = -alpha * mdist / (dist + _EPSILON)
            scale = np.where(self.similar, alpha, np.where(mdist > 0, beta, np.float32(0)))
            bottom[i].diff[...] = (scale[:, None] * self.diff).reshape(bottom[i].shape)
