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
#: Weight gradients whose 64-wide output panels would be less full than this are vectorised over positions instead.
POSITIONS_BELOW = 0.75


def applies(layer, shape, out_hw):
    """The compiled kernels are built for this CPU (AVX-512) and the layer is a plain stride-1 one.

    Such a layer takes the batch-last layout whatever its row length: conv1 of LeNet (24-wide rows)
    too, whose numpy path is batch-first.
    """
    if layer.group != 1 or layer.depthwise is not None or layer.pointwise or tuple(layer.stride) != (1, 1):
        return False
    run = out_hw[1] * shape[0]
    if run < MIN_RUN or _fill(run) < MIN_FILL:
        return False
    kernels = accel.kernels()
    return kernels is not None and bool(kernels.conv_implicit_available())


def _fill(count):
    """How full the 64-wide tiles over `count` values are."""
    return count / (64 * -(-count // 64))


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
        self.inputs = {}  # bottom index -> the padded input its forward read
        # Few outputs (conv1's 20) would leave the 64-wide output panels of the weight gradient mostly empty.
        self.by_positions = _fill(layer.num_output) < POSITIONS_BELOW

    def _sizes(self, layer):
        return (layer.num_output, self.offsets.size, self.plan.out_hw[0], self.run, self.pitch)

    def forward(self, layer, bottom, top, index):
        plan, kernels = self.plan, accel.kernels()
        n, (oh, ow) = plan.shape[0], plan.out_hw
        padded = self._input(layer, bottom, index)
        # One product per bottom: a top handed over batch-last is read after the next bottom's forward.
        product = plan.buffer(("implicit_top", index), (layer.num_output, oh * ow * n))
        bias = kernels.ptr(layer.blobs[1].data) if layer.bias_term else None
        kernels.conv_implicit_forward(kernels.ptr(layer.blobs[0].data), kernels.ptr(padded), self._offsets(kernels),
                                      bias, kernels.ptr(product), *self._sizes(layer))
        if top.may_defer:
            top.defer_data(product.reshape(layer.num_output, oh, ow, n))
        else:
            _transpose(kernels, product, top.data, product.size // n, n)

    def _input(self, layer, bottom, index):
        """The padded (C, hp, wp, N) input of bottom `index`, kept for backward.

        A bottom handed over batch-last with no padding to add is read where it lies."""
        plan = self.plan
        shape = plan.padded_shape(plan.shape[0])
        source = bottom.batch_last_data()
        if source is not None and source.shape == shape:
            self.inputs[index] = source
            return source
        padded = plan.buffer(("implicit_input", index), shape)
        if source is not None:
            (ph, pw), (_, h, w, _) = layer.pad, source.shape
            np.copyto(padded[:, ph:ph + h, pw:pw + w], source)
        else:
            np.copyto(plan.interior(padded, layer.pad), bottom.data)  # numpy's copy is the faster one this way round
        self.inputs[index] = padded
        return padded

    def backward(self, layer, top, bottom, down, index):
        """Add the weight and bias gradients; write the bottom gradient when `down`."""
        plan, kernels = self.plan, accel.kernels()
        n, (oh, ow), o = plan.shape[0], plan.out_hw, layer.num_output
        grad = top.batch_last_diff()
        if grad is None:
            grad = plan.buffer("top_grad", (o, oh * ow * n))
            np.copyto(plan.from_positions(grad, n), top.diff)
        else:
            grad = grad.reshape(o, oh * ow * n)
        if layer.bias_term:
            layer.blobs[1].diff += grad @ plan.ones(grad.shape[1])
        padded = self.inputs[index]
        if self.by_positions:
            weight_grad = plan.buffer("implicit_weight_grad", (o, self.offsets.size))
            weight_grad.fill(0)
            kernels.conv_implicit_weight_grad_positions(kernels.ptr(grad), kernels.ptr(padded), self._offsets(kernels),
                                                        kernels.ptr(weight_grad), *self._sizes(layer))
            layer.blobs[0].diff.reshape(o, -1)[...] += weight_grad
        else:
            transposed = plan.buffer("implicit_top_grad_t", (oh * ow * n, o))
            _transpose(kernels, grad, transposed, o, oh * ow * n)
            weight_grad = plan.buffer("implicit_weight_grad_t", (self.offsets.size, o))
            weight_grad.fill(0)
            kernels.conv_implicit_weight_grad(kernels.ptr(transposed), kernels.ptr(grad), kernels.ptr(padded),
                                              self._offsets(kernels), kernels.ptr(weight_grad), *self._sizes(layer))
            layer.blobs[0].diff.reshape(o, -1)[...] += weight_grad.T
        if not down:
            return
        shape = plan.padded_shape(n)
        hand_over = bottom.may_defer and shape == (bottom.shape[1], bottom.shape[2], bottom.shape[3], n)
        padded_grad = plan.buffer(("padded_grad", index) if hand_over else "padded_grad", shape)
        padded_grad.fill(0)
        kernels.conv_implicit_data_grad(kernels.ptr(layer.blobs[0].data), kernels.ptr(grad), self._offsets(kernels),
                                        kernels.ptr(padded_grad), *self._sizes(layer))
        if hand_over:
            bottom.defer_diff(padded_grad)
        else:
            self._batch_first(kernels, padded_grad, bottom.diff, layer.pad)

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
