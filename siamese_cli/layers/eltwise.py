"""Eltwise: element-wise PROD, SUM (with one coefficient per bottom) or MAX of equal-shaped bottoms."""
import numpy as np

from ..proto import caffe_pb2
from .base import Layer

_OP = caffe_pb2.EltwiseParameter


class Eltwise(Layer):
    type = "Eltwise"
    min_bottom = 2
    num_top = 1

    def setup(self, bottom, top):
        p = self.param.eltwise_param
        self.op = p.operation
        if p.coeff and len(p.coeff) != len(bottom):
            raise self.error(f"{len(p.coeff)} coeff values for {len(bottom)} bottoms; give one per bottom")
        if p.coeff and self.op == _OP.PROD:
            raise self.error("coeff applies only to operation SUM")
        self.coeffs = [np.float32(c) for c in p.coeff] or [np.float32(1)] * len(bottom)
        self.stable_prod_grad = p.stable_prod_grad
        self.argmax = None

    def reshape(self, bottom, top):
        for i, blob in enumerate(bottom[1:], 1):
            if blob.shape != bottom[0].shape:
                raise self.error(
                    f"bottoms must have equal shapes: bottom 0 is {list(bottom[0].shape)}, "
                    f"bottom {i} is {list(blob.shape)}"
                )
        top[0].reshape(bottom[0].shape)

    def forward(self, bottom, top):
        out = top[0].data
        if self.op == _OP.PROD:
            value = bottom[0].data * bottom[1].data
            for blob in bottom[2:]:
                value *= blob.data
            out[...] = value
        elif self.op == _OP.SUM:
            value = np.zeros_like(out)
            for coeff, blob in zip(self.coeffs, bottom):
                value += coeff * blob.data
            out[...] = value
        else:
            # Caffe's order: bottom 1 wins a tie with bottom 0; later bottoms must be strictly larger.
            a, b = bottom[0].data, bottom[1].data
            first = a > b
            value = np.where(first, a, b)
            argmax = np.where(first, 0, 1).astype(np.int32)
            for i, blob in enumerate(bottom[2:], 2):
                larger = blob.data > value
                value = np.where(larger, blob.data, value)
                argmax[larger] = i
            self.argmax = argmax
            out[...] = value

    def backward(self, top, propagate_down, bottom):
        top_diff = top[0].diff
        for i, blob in enumerate(bottom):
            if not propagate_down[i]:
                continue
            if self.op == _OP.PROD:
                if self.stable_prod_grad:
                    others = [b.data for j, b in enumerate(bottom) if j != i]
                    grad = others[0].copy()
                    for data in others[1:]:
                        grad *= data
                else:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        grad = top[0].data / blob.data
                blob.diff[...] = grad * top_diff
            elif self.op == _OP.SUM:
                blob.diff[...] = top_diff if self.coeffs[i] == 1 else self.coeffs[i] * top_diff
            else:
                blob.diff[...] = np.where(self.argmax == i, top_diff, np.float32(0))
