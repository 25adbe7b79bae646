"""Depthwise convolution (one input channel per group), one array operation per kernel offset.

With group == channels there is nothing to multiply as a matrix: output channel o reads only
input channel o // m (m = num_output / group). Each kernel offset (i, j) is a strided view of
the padded input, (N, C, 1, oh, ow), scaled by that offset's weights (C, m) and added up, so a
3 x 3 layer of any number of channels is nine multiply-adds over whole arrays.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided


class Depthwise:
    """Forward and backward of a depthwise Convolution of fixed geometry."""

    def __init__(self, kernel, stride, pad, dilation, multiplier):
        self.kernel, self.stride, self.pad, self.dilation = kernel, stride, pad, dilation
        self.multiplier = multiplier
        self._inputs = {}  # bottom index -> its padded input, kept for backward

    def _padded(self, shape, out_hw):
        n, c, h, w = shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.pad, self.dilation
        oh, ow = out_hw
        hp = max(h + 2 * ph, (oh - 1) * sh + dh * (kh - 1) + 1)
        wp = max(w + 2 * pw, (ow - 1) * sw + dw * (kw - 1) + 1)
        return np.zeros((n, c, hp, wp), np.float32)

    def _window(self, padded, i, j, out_hw):
        """The (N, C, 1, oh, ow) view that kernel offset (i, j) reads."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        oh, ow = out_hw
        sn, sc, sy, sx = padded.strides
        start = padded[:, :, i * dh:, j * dw:]
        return as_strided(start, (padded.shape[0], padded.shape[1], 1, oh, ow), (sn, sc, 0, sy * sh, sx * sw),
                          writeable=False)

    def _interior(self, padded, shape):
        (ph, pw), (h, w) = self.pad, shape[2:]
        return padded[:, :, ph:ph + h, pw:pw + w]

    def forward(self, x, weights, bias, out, key=0):
        """out (N, O, oh, ow) = depthwise convolution of x (N, C, H, W) with weights (O, 1, kh, kw)."""
        n, c = x.shape[:2]
        out_hw = out.shape[2:]
        m = self.multiplier
        padded = self._padded(x.shape, out_hw)
        np.copyto(self._interior(padded, x.shape), x)
        self._inputs[key] = padded
        taps = weights.reshape(c, m, *self.kernel)
        total = out.reshape(n, c, m, *out_hw)
        scratch = np.empty(total.shape, np.float32)
        for i in range(self.kernel[0]):
            for j in range(self.kernel[1]):
                window = self._window(padded, i, j, out_hw)
                tap = taps[:, :, i, j][None, :, :, None, None]
                if i == 0 and j == 0:
                    np.multiply(window, tap, out=total)
                else:
                    np.multiply(window, tap, out=scratch)
                    total += scratch
        if bias is not None:
            out += bias[None, :, None, None]

    def backward(self, dy, weights, weight_diff, bias_diff, dx, key=0):
        """Add the weight (and bias) gradients; write the bottom gradient into dx unless it is None."""
        n, o = dy.shape[:2]
        m = self.multiplier
        c = o // m
        out_hw = dy.shape[2:]
        padded = self._inputs[key]
        grad = dy.reshape(n, c, m, *out_hw)
        taps = weights.reshape(c, m, *self.kernel)
        tap_diff = weight_diff.reshape(c, m, *self.kernel)
        if bias_diff is not None:
            bias_diff += dy.sum(axis=(0, 2, 3), dtype=np.float32)
        padded_grad = None if dx is None else np.zeros(padded.shape, np.float32)
        for i in range(self.kernel[0]):
            for j in range(self.kernel[1]):
                window = self._window(padded, i, j, out_hw)
                tap_diff[:, :, i, j] += np.einsum("ncqyx,ncqyx->cq", np.broadcast_to(window, grad.shape), grad)
                if padded_grad is not None:
                    contribution = (grad * taps[:, :, i, j][None, :, :, None, None]).sum(axis=2)
                    (sh, sw), (dh, dw) = self.stride, self.dilation
                    target = padded_grad[:, :, i * dh:i * dh + (out_hw[0] - 1) * sh + 1:sh,
                                         j * dw:j * dw + (out_hw[1] - 1) * sw + 1:sw]
                    target += contribution
        if dx is not None:
            np.copyto(dx, self._interior(padded_grad, dx.shape))
