"""Compiled implicit-GEMM path (accel/conv.c) for stride-1 convolutions with short output rows.

These are the layers (LeNet's conv2) whose im2col columns are several times larger than their
input: 8 MB of columns from a 1.3 MB padded input for the siamese example's conv2. Reading the
padded input in place keeps the products in cache, removes the column copy from forward and
both the column gradient and col2im from backward. Results equal the numpy path's to float32
summation order (tests/test_convolution.py runs every case both ways).
"""
import numpy as np

from .. import accel

#: Position runs (output width times batch) shorter than this fill too little of a 64-wide tile: numpy path.
MIN_RUN = 64
#: Nor when the 64-wide tiles over a run are less full than this (ResNet's 7x7 maps at batch 10: 70 of 128).
MIN_FILL = 0.75


def applies(layer, plan):
    """The compiled kernels are built for this CPU (AVX-512) and the layer is a plain stride-1 batch-last one."""
    if layer.group != 1 or layer.depthwise is not None or layer.pointwise or not plan.flat_scatter:
        return False
    run = plan.out_hw[1] * plan.shape[0]
    if run < MIN_RUN or run / (64 * -(-run // 64)) < MIN_FILL:
        return False
    kernels = accel.kernels()
    return kernels is not None and bool(kernels.conv_implicit_available())


class Implicit:
    """The offsets table and buffers of one input shape; the padded input of each bottom is kept for backward."""

    def __init__(self, layer, plan):
        (kh, kw), (dh, dw) = layer.kernel, layer.dilation
        n = plan.shape[0]
        self.plan = plan
        self.pitch = plan.wp * n
        plane = plan.hp * self.pitch
        channel, i, j = np.meshgrid(np.arange(layer.channels), np.arange(kh), np.arange(kw), indexing="ij")
        # Weight columns are ordered (C, kh, kw), as Caffe's; each names where its run starts in the padded input.
        self.offsets = (channel * plane + i * dh * self.pitch + j * dw * n).astype(np.int64).ravel()
        self.run = plan.out_hw[1] * n

    def _sizes(self, layer):
        return (layer.num_output, self.offsets.size, self.plan.out_hw[0], self.run, self.pitch)

    def forward(self, layer, x, top, index):
        plan, kernels = self.plan, accel.kernels()
        n, (oh, ow) = plan.shape[0], plan.out_hw
        padded = plan.buffer(("implicit_input", index), plan.padded_shape(n))
        np.copyto(plan.interior(padded, layer.pad), x)  # numpy's copy is the faster one this way round
        product = plan.buffer("implicit_top", (layer.num_output, oh * ow * n))
        bias = kernels.ptr(layer.blobs[1].data) if layer.bias_term else None
        kernels.conv_implicit_forward(kernels.ptr(layer.blobs[0].data), kernels.ptr(padded), self._offsets(kernels),
                                      bias, kernels.ptr(product), *self._sizes(layer))
        _transpose(kernels, product, top, product.size // n, n)

    def backward(self, layer, top_diff, bottom_diff, index):
        """Add the weight and bias gradients; write the bottom gradient when `bottom_diff` is given."""
        plan, kernels = self.plan, accel.kernels()
        n, (oh, ow), o = plan.shape[0], plan.out_hw, layer.num_output
        grad = plan.buffer("top_grad", (o, oh * ow * n))
        np.copyto(plan.from_positions(grad, n), top_diff)
        if layer.bias_term:
            layer.blobs[1].diff += grad @ plan.ones(grad.shape[1])
        transposed = plan.buffer("implicit_top_grad_t", (oh * ow * n, o))
        _transpose(kernels, grad, transposed, o, oh * ow * n)
        weight_grad = plan.buffer("implicit_weight_grad_t", (self.offsets.size, o))
        weight_grad.fill(0)
        padded = plan.buffer(("implicit_input", index), plan.padded_shape(n))
        kernels.conv_implicit_weight_grad(kernels.ptr(transposed), kernels.ptr(padded), self._offsets(kernels),
                                          kernels.ptr(weight_grad), *self._sizes(layer))
        layer.blobs[0].diff.reshape(o, -1)[...] += weight_grad.T
        if bottom_diff is None:
            return
        padded_grad = plan.buffer("padded_grad", plan.padded_shape(n))
        padded_grad.fill(0)
        kernels.conv_implicit_data_grad(kernels.ptr(layer.blobs[0].data), kernels.ptr(grad), self._offsets(kernels),
                                        kernels.ptr(padded_grad), *self._sizes(layer))
        self._batch_first(kernels, padded_grad, bottom_diff, layer.pad)

    def _batch_first(self, kernels, padded, x, pad):
        """The interior of the padded (C, hp, wp, N) buffer -> (N, C, H, W), one (W, N) block per (c, y)."""
        n, c, h, w = x.shape
        interior = padded.reshape(-1)[(pad[0] * self.plan.wp + pad[1]) * n:]
        kernels.transpose_copy(kernels.ptr(interior), kernels.ptr(x), c, h, w, n, self.plan.hp * self.pitch,
                               self.pitch, n, h * w, w, c * h * w)

    def _offsets(self, kernels):
        return kernels.ptr(self.offsets, accel.INT64)


def _transpose(kernels, source, target, rows, cols):
    """target (cols, rows) = source (rows, cols), both C-contiguous of any shape with that many values."""
    kernels.transpose_copy(kernels.ptr(source), kernels.ptr(target), 1, 1, rows, cols, 0, 0, cols, 0, 0, rows)
