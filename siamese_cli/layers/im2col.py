"""Caffe's Im2col layer: the convolution's column buffer as a blob, (N, C * kh * kw, oh, ow)."""
import numpy as np

from ._im2col import col2im, im2col, out_hw
from .base import Layer
from ._geometry import conv_geometry


class Im2col(Layer):
    type = "Im2col"
    num_bottom = 1
    num_top = 1

    def setup(self, bottom, top):
        p = self.param.convolution_param
        self.geometry = conv_geometry(self, p)
        if p.axis not in (1, -3) or p.force_nd_im2col:
            raise self.error("only 2-D im2col over axis 1 (channels) is supported")

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.error(f"takes 4-D input (N, C, H, W), got shape {list(shape)}")
        oh, ow = out_hw(shape[2:], self.geometry)
        if oh <= 0 or ow <= 0:
            raise self.error(f"the kernel is larger than the padded input {shape[2]}x{shape[3]}")
        kh, kw = self.geometry[0]
        top[0].reshape((shape[0], shape[1] * kh * kw, oh, ow))

    def forward(self, bottom, top):
        top[0].data[...] = im2col(bottom[0].data, self.geometry).reshape(top[0].shape)

    def backward(self, top, propagate_down, bottom):
        if propagate_down[0]:
            n, c, h, w = bottom[0].shape
            kh, kw = self.geometry[0]
            columns = top[0].diff.reshape(n, c, kh, kw, *top[0].shape[2:])
            np.copyto(bottom[0].diff, col2im(columns, self.geometry, (h, w)))
