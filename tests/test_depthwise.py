"""Depthwise convolution (group == channels): the compiled kernels (accel/depthwise.c) against the
numpy path, geometry by geometry, and against a plain-loop reference written from Caffe's definition."""
import numpy as np
import pytest

from gradcheck import check_gradients, make_blobs
from siamese_cli import accel
from siamese_cli.layers import _depthwise
from test_convolution import FILLERS, make, reference, run

# (convolution_param, input shape, stride, pad, dilation); output rows under 32 take the tiled
# path of the C forward, longer rows (and unequal strides) the row path.
GEOMETRIES = [
    ("num_output: 5 group: 5 kernel_size: 3 pad: 1", (2, 5, 9, 11), (1, 1), (1, 1), (1, 1)),
    ("num_output: 3 group: 3 kernel_size: 3 pad: 1", (2, 3, 6, 40), (1, 1), (1, 1), (1, 1)),
    ("num_output: 8 group: 4 kernel_size: 3 pad: 1 stride: 2", (2, 4, 9, 70), (2, 2), (1, 1), (1, 1)),
    ("num_output: 8 group: 4 kernel_size: 3 pad: 1 stride: 2", (2, 4, 9, 13), (2, 2), (1, 1), (1, 1)),
    ("num_output: 6 group: 3 kernel_h: 2 kernel_w: 3 pad_h: 2 pad_w: 1 dilation: 2", (3, 3, 13, 7), (1, 1), (2, 1),
     (2, 2)),
    ("num_output: 9 group: 3 kernel_h: 5 kernel_w: 3 pad_h: 2 pad_w: 0 stride_h: 3 stride_w: 2 dilation: 1",
     (1, 3, 17, 23), (3, 2), (2, 0), (1, 1)),
    ("num_output: 4 group: 4 kernel_size: 3 stride: 3", (2, 4, 11, 101), (3, 3), (0, 0), (1, 1)),
    ("num_output: 6 group: 6 kernel_size: 1 stride: 2", (2, 6, 8, 8), (2, 2), (0, 0), (1, 1)),
    ("num_output: 3 group: 3 kernel_size: 3 pad: 2 bias_term: false", (2, 3, 5, 36), (1, 1), (2, 2), (1, 1)),
    ("num_output: 4 group: 4 kernel_size: 3 pad: 2 dilation: 2", (1, 4, 7, 37), (1, 1), (2, 2), (2, 2)),
    ("num_output: 4 group: 4 kernel_size: 3 pad: 2 dilation: 2", (1, 4, 7, 9), (1, 1), (2, 2), (2, 2)),
    ("num_output: 4 group: 2 kernel_size: 3 pad: 1 stride_h: 2 stride_w: 1", (2, 2, 7, 35), (2, 1), (1, 1), (1, 1)),
    ("num_output: 2 group: 2 kernel_size: 3 pad: 1", (2, 2, 3, 3), (1, 1), (1, 1), (1, 1)),
]


def both_paths(monkeypatch, text, x, dy, threads="2"):
    """(top, weight diff, bias diff, bottom diff) from the compiled and the numpy path, same weights."""
    monkeypatch.setenv("SIAMESE_BRANCH_THREADS", threads)
    results = []
    for setting in ("1", "0"):
        monkeypatch.setenv(accel.ENV, setting)
        layer = make(f"{text} {FILLERS}")
        bottom, top = run(layer, x)
        assert (layer.depthwise.kernels is not None) == (setting == "1")
        for blob in layer.blobs:
            blob.diff[...] = 0.5  # gradients are added to what is there
        bottom[0].diff[...] = 7  # and the bottom's is overwritten
        top[0].diff[...] = dy
        layer.backward(top, [True], bottom)
        bias_diff = layer.blobs[1].diff.copy() if len(layer.blobs) > 1 else None
        results.append((top[0].data.copy(), layer.blobs[0].diff.copy(), bias_diff, bottom[0].diff.copy()))
    return results


@pytest.fixture
def compiled():
    if accel._compiler() is None:
        pytest.skip(accel.status())


@pytest.mark.usefixtures("compiled")
@pytest.mark.parametrize("text, shape, stride, pad, dilation", GEOMETRIES)
def test_compiled_matches_numpy_path(monkeypatch, text, shape, stride, pad, dilation):
    """Top and bottom gradient bit for bit; weight and bias gradients (summed in another order) to float32."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal(shape).astype(np.float32)
    probe = make(f"{text} {FILLERS}")
    _, (top,) = run(probe, x)
    dy = rng.standard_normal(top.shape).astype(np.float32)
    (out, weight_diff, bias_diff, dx), (out_np, weight_diff_np, bias_diff_np, dx_np) = both_paths(monkeypatch, text, x, dy)
    np.testing.assert_array_equal(out, out_np)
    np.testing.assert_array_equal(dx, dx_np)
    np.testing.assert_allclose(weight_diff, weight_diff_np, rtol=1e-5, atol=1e-5)
    if bias_diff is not None:
        np.testing.assert_allclose(bias_diff, bias_diff_np, rtol=1e-5, atol=1e-5)
    bias = probe.blobs[1].data if len(probe.blobs) > 1 else None
    expected = reference(x, probe.blobs[0].data, bias, stride, pad, dilation, shape[1])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # the weight gradient from its definition: sum over images and outputs of input * top gradient
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    expected_weight_diff = 0.5 + np.stack([
        reference_weight_gradient(x64[:, c // (dy.shape[1] // shape[1])], dy64[:, c], weight_diff.shape[2:], stride, pad,
                                  dilation) for c in range(dy.shape[1])])[:, None]
    np.testing.assert_allclose(weight_diff, expected_weight_diff, rtol=1e-5, atol=1e-5)


def reference_weight_gradient(x, dy, kernel, stride, pad, dilation):
    """d(sum top * dy)/d(weight) of one channel (x: (N, H, W), dy: (N, oh, ow)), by plain loops."""
    grad = np.zeros(kernel)
    n, h, w = x.shape
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            for y in range(dy.shape[1]):
                for v in range(dy.shape[2]):
                    row, col = y * stride[0] - pad[0] + i * dilation[0], v * stride[1] - pad[1] + j * dilation[1]
                    if 0 <= row < h and 0 <= col < w:
                        grad[i, j] += x[:, row, col] @ dy[:, y, v]
    return grad


@pytest.mark.usefixtures("compiled")
def test_compiled_results_do_not_depend_on_the_thread_count(monkeypatch):
    monkeypatch.setattr(_depthwise, "MIN_SPLIT", 0)  # share out even this small layer
    rng = np.random.default_rng(12)
    text = "num_output: 14 group: 7 kernel_size: 3 pad: 1 stride: 2"
    x = rng.standard_normal((3, 7, 12, 66)).astype(np.float32)
    dy = rng.standard_normal((3, 14, 6, 33)).astype(np.float32)
    single = both_paths(monkeypatch, text, x, dy, threads="1")[0]
    for threads in ("2", "3", "8"):
        for ours, theirs in zip(both_paths(monkeypatch, text, x, dy, threads=threads)[0], single):
            np.testing.assert_array_equal(ours, theirs)


@pytest.mark.usefixtures("kernel_path")
@pytest.mark.parametrize("text, shape", [
    ("num_output: 8 group: 4 kernel_size: 3 pad: 1 stride: 2", (1, 4, 7, 9)),  # tiled, multiplier 2
    ("num_output: 3 group: 3 kernel_h: 2 kernel_w: 3 pad_h: 2 pad_w: 1 dilation: 2", (2, 3, 6, 7)),
    ("num_output: 4 group: 2 kernel_size: 3 pad: 1 stride_h: 2 stride_w: 1", (2, 2, 5, 6)),  # row path
    ("num_output: 2 group: 2 kernel_h: 5 kernel_w: 3 pad_h: 2 pad_w: 0 stride_h: 3 stride_w: 2", (1, 2, 8, 9)),
])
def test_gradients(text, shape):
    bottom = make_blobs(np.random.default_rng(13).standard_normal(shape).astype(np.float32))
    check_gradients(make(f"{text} {FILLERS}"), bottom)
