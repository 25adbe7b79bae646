"""Pooling: Caffe's shape rule, forward/backward against plain loops written from Caffe's definition."""
import numpy as np
import pytest
from google.protobuf import text_format

from gradcheck import check_gradients, make_blobs
from siamese_cli.blob import Blob
from siamese_cli.errors import SiameseError
from siamese_cli.layers import layer_class
from siamese_cli.layers.pooling import pool_out_size
from siamese_cli.proto import caffe_pb2

pytestmark = pytest.mark.usefixtures("kernel_path")


def make(text):
    param = caffe_pb2.LayerParameter(name="pool", type="Pooling")
    text_format.Merge(f"pooling_param {{ {text} }}", param)
    return layer_class("Pooling")(param, rng=np.random.default_rng(0))


def run(layer, x, num_top=1):
    bottom, top = make_blobs(x), [Blob() for _ in range(num_top)]
    layer.check_counts(bottom, top)
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return bottom, top


def windows(h, w, kernel, stride, pad, ceil_mode=True):
    """Caffe's windows: (ph, pw, h0, h1, w0, w1, pool_size) with the AVE divisor, by plain loops."""
    (kh, kw), (sh, sw), (padh, padw) = kernel, stride, pad
    oh = pool_out_size(h, kh, sh, padh, ceil_mode)
    ow = pool_out_size(w, kw, sw, padw, ceil_mode)
    for ph in range(oh):
        for pw in range(ow):
            h0, w0 = ph * sh - padh, pw * sw - padw
            h1, w1 = min(h0 + kh, h + padh), min(w0 + kw, w + padw)
            size = (h1 - h0) * (w1 - w0)
            yield ph, pw, max(h0, 0), min(h1, h), max(w0, 0), min(w1, w), size


def reference(x, method, kernel, stride, pad, ceil_mode=True):
    """Forward in float64 (MAX also returns the flat argmax, first maximum wins)."""
    n, c, h, w = x.shape
    oh = pool_out_size(h, kernel[0], stride[0], pad[0], ceil_mode)
    ow = pool_out_size(w, kernel[1], stride[1], pad[1], ceil_mode)
    out, mask = np.zeros((n, c, oh, ow)), np.full((n, c, oh, ow), -1.0)
    for b in range(n):
        for ch in range(c):
            for ph, pw, h0, h1, w0, w1, size in windows(h, w, kernel, stride, pad, ceil_mode):
                if method == "MAX":
                    best = -np.inf
                    for y in range(h0, h1):
                        for z in range(w0, w1):
                            if x[b, ch, y, z] > best:
                                best, mask[b, ch, ph, pw] = x[b, ch, y, z], y * w + z
                    out[b, ch, ph, pw] = best
                else:
                    out[b, ch, ph, pw] = x[b, ch, h0:h1, w0:w1].astype(np.float64).sum() / size
    return out, mask


def reference_backward(x_shape, dy, method, mask, kernel, stride, pad):
    n, c, h, w = x_shape
    dx = np.zeros(x_shape)
    for b in range(n):
        for ch in range(c):
            for ph, pw, h0, h1, w0, w1, size in windows(h, w, kernel, stride, pad):
                if method == "MAX":
                    index = int(mask[b, ch, ph, pw])
                    dx[b, ch, index // w, index % w] += dy[b, ch, ph, pw]
                else:
                    dx[b, ch, h0:h1, w0:w1] += dy[b, ch, ph, pw] / size
    return dx


def distinct(shape, seed):
    """Values at least 0.1 apart, so a central difference never moves a maximum."""
    rng = np.random.default_rng(seed)
    return (rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 1.0).astype(np.float32)


CASES = [
    # (param text, input shape, kernel, stride, pad)
    ("kernel_size: 2 stride: 2", (2, 3, 6, 4), (2, 2), (2, 2), (0, 0)),
    ("kernel_size: 3 stride: 2", (2, 2, 7, 6), (3, 3), (2, 2), (0, 0)),
    ("kernel_size: 3 stride: 2 pad: 1", (1, 2, 5, 5), (3, 3), (2, 2), (1, 1)),
    ("kernel_size: 3 stride: 1 pad: 1", (1, 2, 4, 5), (3, 3), (1, 1), (1, 1)),
    ("kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0", (2, 1, 5, 7), (2, 3), (1, 2), (1, 0)),
    ("kernel_size: 4 stride: 4 pad: 2", (1, 2, 6, 6), (4, 4), (4, 4), (2, 2)),
    ("kernel_size: 3 stride: 3 pad: 2", (1, 1, 4, 7), (3, 3), (3, 3), (2, 2)),
    ("kernel_size: 2 stride: 2", (1, 2, 5, 5), (2, 2), (2, 2), (0, 0)),
]


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("text, shape, kernel, stride, pad", CASES)
def test_forward_backward_match_loops(method, text, shape, kernel, stride, pad):
    x = distinct(shape, 1)
    layer = make(f"pool: {method} {text}")
    bottom, (top,) = run(layer, x)
    expected, mask = reference(x, method, kernel, stride, pad)
    assert top.shape == expected.shape
    np.testing.assert_allclose(top.data, expected, rtol=1e-6, atol=1e-6)
    dy = np.random.default_rng(2).standard_normal(top.shape).astype(np.float32)
    top.diff[...] = dy
    bottom[0].diff[...] = np.nan
    layer.backward([top], [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, reference_backward(shape, dy, method, mask, kernel, stride, pad),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("text, shape, kernel, stride, pad", CASES)
def test_gradients(method, text, shape, kernel, stride, pad):
    layer = make(f"pool: {method} {text}")
    check_gradients(layer, make_blobs(distinct(shape, 3)))


def test_ave_divisor_counts_padding_but_not_beyond():
    """5x5 k3 s2 pad 1: corner windows cover 2x2 inputs but divide by 4, 6 or 9 (clipped to H + pad)."""
    layer = make("pool: AVE kernel_size: 3 stride: 2 pad: 1")
    _, (top,) = run(layer, np.ones((1, 1, 5, 5), np.float32))
    np.testing.assert_allclose(top.data[0, 0], [[4 / 9, 6 / 9, 4 / 9], [6 / 9, 1, 6 / 9], [4 / 9, 6 / 9, 4 / 9]],
                               rtol=1e-6)
    # 4x4 k3 s2 pad 1: ceil gives 3 windows per axis; the last covers 1 input and divides by
    # min(3 + 3, 4 + 1) - 3 = 2 along that axis.
    layer = make("pool: AVE kernel_size: 3 stride: 2 pad: 1")
    _, (top,) = run(layer, np.ones((1, 1, 4, 4), np.float32))
    np.testing.assert_allclose(top.data[0, 0, 0], [4 / 9, 6 / 9, 2 / 6], rtol=1e-6)
    np.testing.assert_allclose(top.data[0, 0, 2], [2 / 6, 3 / 6, 1 / 4], rtol=1e-6)


def test_ave_sums_in_caffe_order_bit_exactly():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((2, 2, 7, 7)) * 1000).astype(np.float32)
    layer = make("pool: AVE kernel_size: 3 stride: 2 pad: 1")
    _, (top,) = run(layer, x)
    expected = np.zeros(top.shape, np.float32)
    for b in range(2):
        for ch in range(2):
            for ph, pw, h0, h1, w0, w1, size in windows(7, 7, (3, 3), (2, 2), (1, 1)):
                total = np.float32(0)
                for y in range(h0, h1):
                    for z in range(w0, w1):
                        total = np.float32(total + x[b, ch, y, z])
                expected[b, ch, ph, pw] = total / np.float32(size)
    np.testing.assert_array_equal(top.data, expected)


def test_padding_never_wins_max():
    x = -np.arange(1, 26, dtype=np.float32).reshape(1, 1, 5, 5)
    _, (top,) = run(make("pool: MAX kernel_size: 3 stride: 2 pad: 1"), x)
    np.testing.assert_array_equal(top.data[0, 0], [[-1, -2, -4], [-6, -7, -9], [-16, -17, -19]])


@pytest.mark.parametrize("kernel, stride, pad, shape", [(2, 2, 0, (1, 2, 4, 4)), (3, 1, 0, (1, 1, 5, 4)),
                                                   (3, 2, 1, (1, 1, 5, 5))])
def test_max_ties_take_first_in_row_major_order(kernel, stride, pad, shape):
    """Caffe keeps the first maximum of a window, and backward sends the gradient to it alone."""
    x = np.zeros(shape, np.float32)
    x[..., 1:, :] = 1.0
    x[..., ::2] = 1.0
    layer = make(f"pool: MAX kernel_size: {kernel} stride: {stride} pad: {pad}")
    bottom, top = run(layer, x, num_top=2)
    geometry = (kernel, kernel), (stride, stride), (pad, pad)
    _, mask = reference(x, "MAX", *geometry)
    np.testing.assert_array_equal(top[1].data, mask)
    top[0].diff[...] = np.arange(1, top[0].data.size + 1).reshape(top[0].shape)
    layer.backward(top, [True], bottom)
    np.testing.assert_array_equal(bottom[0].diff, reference_backward(shape, top[0].diff, "MAX", mask, *geometry))


def test_mask_top_is_flat_index():
    x = distinct((2, 3, 6, 6), 5)
    bottom, (top, mask) = run(make("pool: MAX kernel_size: 3 stride: 2 pad: 1"), x, num_top=2)
    expected, expected_mask = reference(x, "MAX", (3, 3), (2, 2), (1, 1))
    assert mask.shape == top.shape and mask.data.dtype == np.float32
    np.testing.assert_array_equal(mask.data, expected_mask)
    flat = x.reshape(2, 3, -1)
    np.testing.assert_array_equal(np.take_along_axis(flat, mask.data.reshape(2, 3, -1).astype(int), 2),
                                  top.data.reshape(2, 3, -1))


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method):
    x = distinct((2, 3, 4, 5), 6)
    _, (top,) = run(make(f"pool: {method} global_pooling: true"), x)
    assert top.shape == (2, 3, 1, 1)
    expected = x.max(axis=(2, 3)) if method == "MAX" else x.astype(np.float64).mean(axis=(2, 3))
    np.testing.assert_allclose(top.data[:, :, 0, 0], expected, rtol=1e-6)
    check_gradients(make(f"pool: {method} global_pooling: true"), make_blobs(distinct((1, 2, 3, 3), 7)))


@pytest.mark.parametrize("size, kernel, stride, pad, expected", [
    (28, 2, 2, 0, 14), (24, 2, 2, 0, 12), (8, 2, 2, 0, 4), (5, 3, 2, 1, 3),
    (6, 3, 2, 0, 3), (7, 2, 2, 0, 4), (7, 3, 2, 0, 3), (4, 3, 2, 1, 3),
    (6, 4, 4, 2, 2), (4, 3, 3, 2, 2), (5, 3, 3, 2, 3),  # the pad rule drops a window starting in the padding
])
def test_output_size_rule(size, kernel, stride, pad, expected):
    assert pool_out_size(size, kernel, stride, pad) == expected
    _, (top,) = run(make(f"kernel_size: {kernel} stride: {stride} pad: {pad}"),
                    np.zeros((1, 1, size, size), np.float32))
    assert top.shape == (1, 1, expected, expected)


def test_floor_round_mode():
    _, (top,) = run(make("kernel_size: 2 stride: 2 round_mode: FLOOR"), np.zeros((1, 1, 7, 7), np.float32))
    assert top.shape == (1, 1, 3, 3)


def test_lenet_shapes():
    _, (p1,) = run(make("pool: MAX kernel_size: 2 stride: 2"), np.zeros((64, 20, 24, 24), np.float32))
    assert p1.shape == (64, 20, 12, 12)
    _, (p2,) = run(make("pool: MAX kernel_size: 2 stride: 2"), np.zeros((64, 50, 8, 8), np.float32))
    assert p2.shape == (64, 50, 4, 4)


def test_reshape_follows_new_input_shape():
    layer = make("pool: MAX kernel_size: 3 stride: 2")
    run(layer, distinct((1, 1, 7, 7), 8))
    x = distinct((2, 1, 9, 5), 9)
    bottom, top = make_blobs(x), [Blob()]
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_array_equal(top[0].data, reference(x, "MAX", (3, 3), (2, 2), (0, 0))[0])


def test_no_propagate_down_leaves_bottom_diff_alone():
    layer = make("pool: AVE kernel_size: 2 stride: 2")
    bottom, (top,) = run(layer, np.ones((1, 1, 4, 4), np.float32))
    bottom[0].diff[...] = 5
    top.diff[...] = 1
    layer.backward([top], [False], bottom)
    assert np.all(bottom[0].diff == 5)


@pytest.mark.parametrize("text, num_top, message", [
    ("pool: STOCHASTIC kernel_size: 2", 1, "STOCHASTIC"),
    ("pool: AVE kernel_size: 2", 2, "MAX"),
    ("kernel_size: 2 kernel_h: 2 kernel_w: 2", 1, "not both"),
    ("kernel_h: 2", 1, "kernel_size"),
    ("stride: 2", 1, "kernel_size"),
    ("global_pooling: true kernel_size: 2", 1, "global_pooling"),
    ("global_pooling: true stride: 2", 1, "stride 1"),
    ("kernel_size: 2 pad: 2", 1, "smaller than the kernel"),
    ("kernel_size: 2 pad_h: 1", 1, "pad_h and pad_w"),
    ("kernel_size: 2 stride: 0", 1, "stride"),
    ("kernel_size: 9", 1, "larger than"),
    ("kernel_size: 2", 3, "1 or 2 tops"),
])
def test_bad_definitions_are_user_errors(text, num_top, message):
    with pytest.raises(SiameseError, match=message):
        run(make(text), np.zeros((1, 1, 5, 5), np.float32), num_top=num_top)


def test_needs_4d_input():
    with pytest.raises(SiameseError, match="4-D"):
        run(make("kernel_size: 2"), np.zeros((2, 5, 5), np.float32))
