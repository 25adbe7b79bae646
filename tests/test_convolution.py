"""Convolution: forward against a plain-loop float64 reference, gradients against central differences."""
import numpy as np
import pytest
from google.protobuf import text_format

from gradcheck import check_gradients, make_blobs
from siamese_cli.blob import Blob
from siamese_cli.errors import SiameseError
from siamese_cli.layers import _depthwise, convolution, layer_class
from siamese_cli.proto import caffe_pb2

FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'


def make(text, seed=0):
    param = caffe_pb2.LayerParameter(name="conv", type="Convolution")
    text_format.Merge(f"convolution_param {{ {text} }}", param)
    return layer_class("Convolution")(param, rng=np.random.default_rng(seed))


def run(layer, *arrays):
    bottom = make_blobs(*arrays)
    top = [Blob() for _ in bottom]
    layer.check_counts(bottom, top)
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return bottom, top


def reference(x, weights, bias, stride, pad, dilation, group):
    """Direct convolution with plain loops in float64."""
    x = x.astype(np.float64)
    weights = weights.astype(np.float64)
    n, c, h, w = x.shape
    o, cg, kh, kw = weights.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dilation
    oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
    ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
    out = np.zeros((n, o, oh, ow))
    og = o // group
    for b in range(n):
        for f in range(o):
            first = (f // og) * cg
            for y in range(oh):
                for z in range(ow):
                    total = 0.0 if bias is None else float(bias[f])
                    for ch in range(cg):
                        for i in range(kh):
                            for j in range(kw):
                                row = y * sh - ph + i * dh
                                col = z * sw - pw + j * dw
                                if 0 <= row < h and 0 <= col < w:
                                    total += x[b, first + ch, row, col] * weights[f, ch, i, j]
                    out[b, f, y, z] = total
    return out


CASES = [
    # (param text, input shape, stride, pad, dilation, group)
    ("num_output: 3 kernel_size: 3", (2, 2, 6, 5), (1, 1), (0, 0), (1, 1), 1),
    ("num_output: 4 kernel_size: 3 stride: 2 pad: 1", (2, 3, 7, 6), (2, 2), (1, 1), (1, 1), 1),
    ("num_output: 2 kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0", (1, 2, 5, 7),
     (1, 2), (1, 0), (1, 1), 1),
    ("num_output: 4 kernel_size: 3 dilation: 2 pad: 2", (2, 2, 7, 7), (1, 1), (2, 2), (2, 2), 1),
    ("num_output: 4 kernel_size: 2 kernel_size: 3 stride: 2 stride: 1 pad: 0 pad: 1 dilation: 1 dilation: 2",
     (1, 2, 6, 7), (2, 1), (0, 1), (1, 2), 1),
    ("num_output: 6 kernel_size: 3 group: 3 pad: 1", (2, 6, 5, 5), (1, 1), (1, 1), (1, 1), 3),
    ("num_output: 2 kernel_size: 1", (3, 4, 3, 3), (1, 1), (0, 0), (1, 1), 1),
    ("num_output: 3 kernel_size: 1 bias_term: false", (2, 3, 4, 20), (1, 1), (0, 0), (1, 1), 1),
    # rows of at least convolution.SHORT_ROW take the batch-second layout
    ("num_output: 2 kernel_size: 3 stride: 1", (2, 2, 4, 20), (1, 1), (0, 0), (1, 1), 1),
    ("num_output: 4 kernel_size: 3 group: 2 pad: 1", (2, 4, 3, 18), (1, 1), (1, 1), (1, 1), 2),
    ("num_output: 3 kernel_size: 3 stride: 2 dilation: 2 pad: 1", (2, 2, 5, 40), (2, 2), (1, 1), (2, 2), 1),
    ("num_output: 6 kernel_size: 3 group: 3 pad: 1 stride: 2", (2, 6, 4, 20), (2, 2), (1, 1), (1, 1), 3),
    ("num_output: 8 kernel_size: 1 group: 2", (2, 4, 3, 3), (1, 1), (0, 0), (1, 1), 2),
    # depthwise (group == channels), channel multiplier 1 and 2
    ("num_output: 5 kernel_size: 3 group: 5 pad: 1", (2, 5, 6, 5), (1, 1), (1, 1), (1, 1), 5),
    ("num_output: 4 kernel_size: 3 group: 4 pad: 1 stride: 2", (1, 4, 7, 6), (2, 2), (1, 1), (1, 1), 4),
    ("num_output: 6 kernel_h: 2 kernel_w: 3 group: 3 dilation: 2 pad: 1", (2, 3, 6, 7), (1, 1), (1, 1), (2, 2), 3),
    ("num_output: 3 kernel_size: 3 group: 3 bias_term: false", (1, 3, 5, 20), (1, 1), (0, 0), (1, 1), 3),
    ("num_output: 4 kernel_size: 3 group: 2 pad: 1 dilation: 2", (2, 2, 4, 18), (1, 1), (1, 1), (2, 2), 2),
    ("num_output: 3 kernel_size: 3 group: 3 stride: 2 pad: 1", (1, 3, 5, 34), (2, 2), (1, 1), (1, 1), 3),
]


@pytest.mark.usefixtures("kernel_path")  # depthwise cases: compiled and numpy
@pytest.mark.parametrize("text, shape, stride, pad, dilation, group", CASES)
def test_forward_matches_direct_convolution(text, shape, stride, pad, dilation, group):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    layer = make(f"{text} {FILLERS}")
    _, (top,) = run(layer, x)
    bias = layer.blobs[1].data if len(layer.blobs) > 1 else None
    expected = reference(x, layer.blobs[0].data, bias, stride, pad, dilation, group)
    assert top.data.dtype == np.float32
    assert top.shape == expected.shape
    np.testing.assert_allclose(top.data, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("kernel_path")  # depthwise cases: compiled and numpy
@pytest.mark.parametrize("text, shape, stride, pad, dilation, group", CASES)
def test_gradients(text, shape, stride, pad, dilation, group):
    rng = np.random.default_rng(2)
    layer = make(f"{text} {FILLERS}")
    bottom = make_blobs(rng.standard_normal(shape).astype(np.float32))
    check_gradients(layer, bottom)


def test_no_bias_term():
    layer = make(f"num_output: 3 kernel_size: 2 bias_term: false {FILLERS}")
    x = np.random.default_rng(3).standard_normal((2, 2, 4, 4)).astype(np.float32)
    _, (top,) = run(layer, x)
    assert len(layer.blobs) == 1
    expected = reference(x, layer.blobs[0].data, None, (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(top.data, expected, rtol=1e-5, atol=1e-5)
    check_gradients(make(f"num_output: 3 kernel_size: 2 bias_term: false {FILLERS}"), make_blobs(x))


def test_chunked_batch_matches_whole_batch(monkeypatch):
    """Columns over the budget are built a few samples at a time; results must not change."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 2, 6, 6)).astype(np.float32)
    dy = rng.standard_normal((5, 3, 6, 6)).astype(np.float32)
    results = []
    for budget in (convolution.COLUMN_BUDGET, 2 * 18 * 36 * 4):
        monkeypatch.setattr(convolution, "COLUMN_BUDGET", budget)
        layer = make(f"num_output: 3 kernel_size: 3 pad: 1 {FILLERS}")
        bottom, top = run(layer, x)
        top[0].diff[...] = dy
        layer.backward(top, [True], bottom)
        results.append((top[0].data.copy(), bottom[0].diff.copy(), layer.blobs[0].diff.copy(),
                        layer.blobs[1].diff.copy()))
    for whole, chunked in zip(*results):
        np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-5)


def test_param_gradients_add_and_bottom_gradient_overwrites():
    rng = np.random.default_rng(5)
    layer = make(f"num_output: 2 kernel_size: 3 {FILLERS}")
    bottom, top = run(layer, rng.standard_normal((2, 1, 5, 5)).astype(np.float32))
    top[0].diff[...] = rng.standard_normal(top[0].shape)
    layer.backward(top, [True], bottom)
    once_w, once_b, once_x = layer.blobs[0].diff.copy(), layer.blobs[1].diff.copy(), bottom[0].diff.copy()
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once_w, rtol=1e-6)
    np.testing.assert_allclose(layer.blobs[1].diff, 2 * once_b, rtol=1e-6)
    np.testing.assert_array_equal(bottom[0].diff, once_x)
    np.testing.assert_allclose(once_b, top[0].diff.sum(axis=(0, 2, 3)), rtol=1e-5)


def test_no_propagate_down_leaves_bottom_diff_alone():
    layer = make(f"num_output: 2 kernel_size: 3 {FILLERS}")
    bottom, top = run(layer, np.ones((1, 1, 4, 4), np.float32))
    bottom[0].diff[...] = 7
    top[0].diff[...] = 1
    layer.backward(top, [False], bottom)
    assert np.all(bottom[0].diff == 7)
    assert np.all(layer.blobs[0].diff == 4)


def test_two_bottoms_share_weights():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    b = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    layer = make(f"num_output: 3 kernel_size: 3 {FILLERS}")
    _, (ta, tb) = run(layer, a, b)
    w, bias = layer.blobs[0].data, layer.blobs[1].data
    np.testing.assert_allclose(ta.data, reference(a, w, bias, (1, 1), (0, 0), (1, 1), 1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tb.data, reference(b, w, bias, (1, 1), (0, 0), (1, 1), 1), rtol=1e-5, atol=1e-5)
    check_gradients(make(f"num_output: 3 kernel_size: 3 {FILLERS}"), make_blobs(a, b), top=[Blob(), Blob()])


def test_default_fillers_are_constant_zero_and_shapes():
    layer = make("num_output: 4 kernel_size: 3 group: 2")
    run(layer, np.ones((1, 6, 5, 5), np.float32))
    assert layer.blobs[0].shape == (4, 3, 3, 3)
    assert layer.blobs[1].shape == (4,)
    assert not layer.blobs[0].data.any() and not layer.blobs[1].data.any()


def test_xavier_weights_use_layer_rng():
    text = 'num_output: 20 kernel_size: 5 weight_filler { type: "xavier" }'
    first = make(text, seed=7)
    second = make(text, seed=7)
    run(first, np.zeros((1, 1, 8, 8), np.float32))
    run(second, np.zeros((1, 1, 8, 8), np.float32))
    np.testing.assert_array_equal(first.blobs[0].data, second.blobs[0].data)
    assert np.abs(first.blobs[0].data).max() <= np.sqrt(3 / 25)
    assert first.blobs[0].data.std() > 0.1


def test_lenet_shapes():
    x = np.zeros((64, 1, 28, 28), np.float32)
    _, (c1,) = run(make("num_output: 20 kernel_size: 5"), x)
    assert c1.shape == (64, 20, 24, 24)
    _, (c2,) = run(make("num_output: 50 kernel_size: 5"), np.zeros((64, 20, 12, 12), np.float32))
    assert c2.shape == (64, 50, 8, 8)


@pytest.mark.parametrize("size, kernel, stride, pad, dilation, expected", [
    (28, 5, 1, 0, 1, 24), (7, 3, 2, 1, 1, 4), (6, 3, 2, 0, 1, 2), (7, 3, 1, 0, 3, 1), (5, 1, 3, 0, 1, 2),
])
def test_output_size_rule(size, kernel, stride, pad, dilation, expected):
    assert convolution.conv_out_size(size, kernel, stride, pad, dilation) == expected
    layer = make(f"num_output: 1 kernel_size: {kernel} stride: {stride} pad: {pad} dilation: {dilation}")
    _, (top,) = run(layer, np.zeros((1, 1, size, size), np.float32))
    assert top.shape == (1, 1, expected, expected)


@pytest.mark.parametrize("text, shape, message", [
    ("num_output: 2 kernel_size: 3", (2, 3, 5), "2-D convolution"),
    ("num_output: 2 kernel_size: 3", (1, 1, 2, 3, 5), "2-D convolution"),
    ("num_output: 2 kernel_size: 3 kernel_h: 3 kernel_w: 3", (1, 1, 5, 5), "not both"),
    ("num_output: 2 kernel_h: 3", (1, 1, 5, 5), "together"),
    ("num_output: 2", (1, 1, 5, 5), "kernel_size"),
    ("num_output: 2 kernel_size: 1 kernel_size: 2 kernel_size: 3", (1, 1, 5, 5), "1 value or 2"),
    ("num_output: 3 kernel_size: 3 group: 2", (1, 4, 5, 5), "group"),
    ("num_output: 2 kernel_size: 7", (1, 1, 5, 5), "larger than"),
    ("kernel_size: 3", (1, 1, 5, 5), "num_output"),
    ("num_output: 2 kernel_size: 3 stride: 0", (1, 1, 5, 5), "stride"),
])
def test_bad_definitions_are_user_errors(text, shape, message):
    with pytest.raises(SiameseError, match=message):
        run(make(text), np.zeros(shape, np.float32))


def test_channel_change_after_setup_is_an_error():
    layer = make("num_output: 2 kernel_size: 3")
    run(layer, np.zeros((1, 2, 5, 5), np.float32))
    bottom, top = make_blobs(np.zeros((1, 3, 5, 5), np.float32)), [Blob()]
    with pytest.raises(SiameseError, match="channels"):
        layer.reshape(bottom, top)


def test_reshape_to_new_batch_size():
    rng = np.random.default_rng(8)
    layer = make(f"num_output: 2 kernel_size: 3 {FILLERS}")
    run(layer, rng.standard_normal((4, 1, 5, 5)).astype(np.float32))
    x = rng.standard_normal((2, 1, 6, 5)).astype(np.float32)
    bottom, top = make_blobs(x), [Blob()]
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    expected = reference(x, layer.blobs[0].data, layer.blobs[1].data, (1, 1), (0, 0), (1, 1), 1)
    np.testing.assert_allclose(top[0].data, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.usefixtures("kernel_path")  # depthwise cases: compiled and numpy
@pytest.mark.parametrize("text, shape, stride, pad", [
    ("num_output: 4 kernel_size: 3 group: 4 pad: 1", (2, 4, 6, 20), (1, 1), (1, 1)),
    ("num_output: 4 kernel_size: 3 group: 4 pad: 1 stride: 2", (2, 4, 9, 36), (2, 2), (1, 1)),
    ("num_output: 4 kernel_size: 3 group: 4 pad: 1 stride: 2", (2, 4, 9, 7), (2, 2), (1, 1)),
])
@pytest.mark.parametrize("threads", ["1", "2", "3"])
def test_depthwise_in_small_blocks_matches_direct_convolution(monkeypatch, text, shape, stride, pad, threads):
    """The forward pass of depthwise layers works block by block, the blocks shared out over threads;
    tiny blocks must give the same top, bit for bit whatever the thread count."""
    monkeypatch.setattr(_depthwise, "BLOCK_BYTES", 64)
    monkeypatch.setattr(_depthwise, "MIN_SPLIT", 0)
    monkeypatch.setenv("SIAMESE_BRANCH_THREADS", threads)
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    layer = make(f"{text} {FILLERS}")
    _, (top,) = run(layer, x)
    assert layer.depthwise.threads == int(threads)
    expected = reference(x, layer.blobs[0].data, layer.blobs[1].data, stride, pad, (1, 1), shape[1])
    np.testing.assert_allclose(top.data, expected, rtol=1e-5, atol=1e-5)
    monkeypatch.setenv("SIAMESE_BRANCH_THREADS", "1")
    _, (single,) = run(make(f"{text} {FILLERS}"), x)
    np.testing.assert_array_equal(top.data, single.data)
