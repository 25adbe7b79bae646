"""1 x 1 convolution with stride 1 and no padding: the bottom already is its column matrix.

Each sample's (C, H * W) block multiplies the (O, C) weights straight into the top, with no
im2col copy and no transposes; the gradients are the two transposed products. ResNet's and
MobileNet's 1 x 1 layers (most of their work) take this path.
"""
import numpy as np


def applies(layer):
    return (layer.kernel == (1, 1) and layer.stride == (1, 1) and layer.pad == (0, 0)
            and layer.group == 1)


def _flat(array):
    n, c = array.shape[:2]
    return array.reshape(n, c, -1)


def forward(layer, bottom, top):
    weights = layer.blobs[0].data.reshape(layer.num_output, -1)
    for b, t in zip(bottom, top):
        out = _flat(t.data)
        np.matmul(weights, _flat(b.data), out=out)
        if layer.bias_term:
            out += layer.blobs[1].data[:, None]


def backward(layer, top, propagate_down, bottom):
    weights = layer.blobs[0].data.reshape(layer.num_output, -1)
    weight_diff = layer.blobs[0].diff.reshape(layer.num_output, -1)
    for index, (t, b) in enumerate(zip(top, bottom)):
        grad = _flat(t.diff)
        if layer.bias_term:
            layer.blobs[1].diff += grad.sum(axis=(0, 2), dtype=np.float32)
        weight_diff += np.matmul(grad, _flat(b.data).transpose(0, 2, 1)).sum(axis=0)
        if index < len(propagate_down) and propagate_down[index]:
            np.matmul(weights.T, grad, out=_flat(b.diff))
