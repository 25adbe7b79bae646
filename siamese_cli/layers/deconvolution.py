"""Caffe's Deconvolution: the transpose of Convolution, with the same parameter names.

Weights are (C_in, num_output / group, kh, kw): each input pixel spreads its kernel-weighted
copy over the output (columns = W^T x, then col2im), so the output is
stride (in - 1) + dilation (k - 1) + 1 - 2 pad per spatial axis.
"""
import numpy as np

from ..blob import Blob
from ..fillers import fill
from ._im2col import col2im, im2col
from .base import Layer
from ._geometry import conv_geometry


class Deconvolution(Layer):
    type = "Deconvolution"
    min_bottom = 1
    min_top = 1

    def setup(self, bottom, top):
        p = self.param.convolution_param
        self.geometry = conv_geometry(self, p)
        self.num_output, self.group, self.bias_term = int(p.num_output), int(p.group), bool(p.bias_term)
        if self.num_output <= 0 or self.group <= 0:
            raise self.error("convolution_param.num_output and group must be positive")
        if len(bottom[0].shape) != 4 or p.axis not in (1, -3):
            raise self.error(f"takes 4-D input (N, C, H, W) with axis 1, got shape {list(bottom[0].shape)}")
        self.channels = bottom[0].shape[1]
        if self.channels % self.group or self.num_output % self.group:
            raise self.error(f"group {self.group} must divide the input channels ({self.channels}) "
                             f"and num_output ({self.num_output})")
        kh, kw = self.geometry[0]
        shapes = [(self.channels, self.num_output // self.group, kh, kw)]
        fillers = [p.weight_filler]
        if self.bias_term:
            shapes.append((self.num_output,))
            fillers.append(p.bias_filler)
        self.blobs = []
        for filler, shape in zip(fillers, shapes):
            blob = Blob(shape)
            blob.data[...] = fill(filler, shape, self.rng)
            self.blobs.append(blob)

    def reshape(self, bottom, top):
        if len(bottom) != len(top):
            raise self.error(f"needs as many tops as bottoms, got {len(bottom)} and {len(top)}")
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.geometry
        shape = bottom[0].shape
        for blob in bottom:
            if blob.shape != shape:
                raise self.error(f"all bottoms must have one shape, got {list(shape)} and {list(blob.shape)}")
        if len(shape) != 4 or shape[1] != self.channels:
            raise self.error(f"input must be (N, {self.channels}, H, W), got {list(shape)}")
        oh = sh * (shape[2] - 1) + dh * (kh - 1) + 1 - 2 * ph
        ow = sw * (shape[3] - 1) + dw * (kw - 1) + 1 - 2 * pw
        if oh <= 0 or ow <= 0:
            raise self.error(f"pad {[ph, pw]} leaves no output for input {shape[2]}x{shape[3]}")
        for blob in top:
            blob.reshape((shape[0], self.num_output, oh, ow))

    def _weights(self, array):
        """(group, C_in / group, num_output / group * kh * kw)."""
        return array.reshape(self.group, self.channels // self.group, -1)

    def forward(self, bottom, top):
        g = self.group
        kh, kw = self.geometry[0]
        weights = self._weights(self.blobs[0].data)
        for b, t in zip(bottom, top):
            n, _, h, w = b.shape
            x = b.data.reshape(n, g, self.channels // g, h * w)
            columns = np.matmul(weights.transpose(0, 2, 1)[None], x)
            columns = columns.reshape(n, self.num_output, kh, kw, h, w)
            t.data[...] = col2im(columns, self.geometry, t.shape[2:])
            if self.bias_term:
                t.data += self.blobs[1].data[:, None, None]

    def backward(self, top, propagate_down, bottom):
        g = self.group
        weights = self._weights(self.blobs[0].data)
        weight_diff = self._weights(self.blobs[0].diff)
        for index, (t, b) in enumerate(zip(top, bottom)):
            n, _, h, w = b.shape
            if self.bias_term:
                self.blobs[1].diff += t.diff.sum(axis=(0, 2, 3), dtype=np.float32)
            columns = im2col(t.diff, self.geometry).reshape(n, g, -1, h * w)
            x = b.data.reshape(n, g, self.channels // g, h * w)
            weight_diff += np.matmul(x, columns.transpose(0, 1, 3, 2)).sum(axis=0)
            if index < len(propagate_down) and propagate_down[index]:
                b.diff[...] = np.matmul(weights[None], columns).reshape(b.shape)
