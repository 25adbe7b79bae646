"""Caffe's InnerProduct (fully connected) layer: one float32 matmul each way."""
import numpy as np

from ..blob import Blob
from ..fillers import fill
from ._common import canonical_axis, count
from .base import Layer


class InnerProduct(Layer):
    """top = bottom (flattened from `axis` into K columns) times the weights, plus bias.

    Weights are (num_output, K), or (K, num_output) with `transpose: true`; bias (num_output,).
    """

    type = "InnerProduct"
    num_bottom = 1
    num_top = 1

    def setup(self, bottom, top):
        p = self.param.inner_product_param
        self.num_output = int(p.num_output)
        if self.num_output <= 0:
            raise self.error("inner_product_param.num_output must be positive")
        self.bias_term = bool(p.bias_term)
        self.transpose = bool(p.transpose)
        shape = bottom[0].shape
        self.axis = canonical_axis(self, p.axis, len(shape))
        self.k = count(shape, self.axis)
        weight_shape = (self.k, self.num_output) if self.transpose else (self.num_output, self.k)
        self.blobs = [Blob(weight_shape)]
        self.blobs[0].data[...] = fill(p.weight_filler, weight_shape, self.rng)
        if self.bias_term:
            self.blobs.append(Blob((self.num_output,)))
            self.blobs[1].data[...] = fill(p.bias_filler, (self.num_output,), self.rng)

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        axis = canonical_axis(self, self.param.inner_product_param.axis, len(shape))
        k = count(shape, axis)
        if k != self.k:
            raise self.error(
                f"input {list(shape)} flattens to {k} values per row from axis {axis}, the weights expect {self.k}"
            )
        self.axis = axis
        self.m = count(shape, 0, axis)
        top[0].reshape(tuple(shape[:axis]) + (self.num_output,))

    def _weights(self, array):
        """The weights as the (K, num_output) right-hand side of top = bottom @ W."""
        return array if self.transpose else array.T

    def forward(self, bottom, top):
        x = bottom[0].data.reshape(self.m, self.k)
        y = top[0].data.reshape(self.m, self.num_output)
        np.matmul(x, self._weights(self.blobs[0].data), out=y)
        if self.bias_term:
            y += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(self.m, self.num_output)
        x = bottom[0].data.reshape(self.m, self.k)
        if self.transpose:
            self.blobs[0].diff += x.T @ dy
        else:
            self.blobs[0].diff += dy.T @ x
        if self.bias_term:
            self.blobs[1].diff += dy.sum(axis=0)
        if propagate_down[0]:
            np.matmul(dy, self._weights(self.blobs[0].data).T, out=bottom[0].diff.reshape(self.m, self.k))
