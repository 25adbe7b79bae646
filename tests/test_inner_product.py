"""InnerProduct: forward against plain loops, gradients against central differences, Caffe's shapes."""
import numpy as np
import pytest
from google.protobuf import text_format

from gradcheck import check_gradients, make_blobs
from siamese_cli.blob import Blob
from siamese_cli.errors import SiameseError
from siamese_cli.layers import layer_class
from siamese_cli.proto import caffe_pb2

FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'


def make(text, seed=0):
    param = caffe_pb2.LayerParameter(name="ip", type="InnerProduct")
    text_format.Merge(f"inner_product_param {{ {text} }}", param)
    return layer_class("InnerProduct")(param, rng=np.random.default_rng(seed))


def run(layer, x):
    bottom, top = make_blobs(x), [Blob()]
    layer.check_counts(bottom, top)
    layer.setup(bottom, top)
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    return bottom, top


def reference(x, weights, bias, axis, transpose):
    """Plain loops in float64 over rows (the leading axes) and outputs."""
    rows = int(np.prod(x.shape[:axis]))
    flat = x.reshape(rows, -1).astype(np.float64)
    w = weights.astype(np.float64)
    outputs = w.shape[1] if transpose else w.shape[0]
    out = np.zeros((rows, outputs))
    for r in range(rows):
        for o in range(outputs):
            total = 0.0 if bias is None else float(bias[o])
            for k in range(flat.shape[1]):
                total += flat[r, k] * (w[k, o] if transpose else w[o, k])
            out[r, o] = total
    return out.reshape(x.shape[:axis] + (outputs,))


CASES = [
    ("num_output: 3", (4, 5), 1, False),
    ("num_output: 3", (2, 3, 2, 2), 1, False),
    ("num_output: 4 transpose: true", (2, 3, 2), 1, True),
    ("num_output: 2 axis: 2", (2, 3, 4), 2, False),
    ("num_output: 2 axis: -1 transpose: true", (3, 2, 5), 2, True),
    ("num_output: 3 axis: 0", (2, 3), 0, False),
]


@pytest.mark.parametrize("text, shape, axis, transpose", CASES)
def test_forward_matches_loops(text, shape, axis, transpose):
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    layer = make(f"{text} {FILLERS}")
    _, (top,) = run(layer, x)
    k = int(np.prod(shape[axis:]))
    n = layer.num_output
    assert layer.blobs[0].shape == ((k, n) if transpose else (n, k))
    expected = reference(x, layer.blobs[0].data, layer.blobs[1].data, axis, transpose)
    assert top.shape == expected.shape and top.data.dtype == np.float32
    np.testing.assert_allclose(top.data, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("text, shape, axis, transpose", CASES)
def test_gradients(text, shape, axis, transpose):
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    check_gradients(make(f"{text} {FILLERS}"), make_blobs(x))


def test_no_bias_term():
    x = np.random.default_rng(3).standard_normal((3, 4)).astype(np.float32)
    layer = make(f"num_output: 2 bias_term: false {FILLERS}")
    _, (top,) = run(layer, x)
    assert len(layer.blobs) == 1
    np.testing.assert_allclose(top.data, reference(x, layer.blobs[0].data, None, 1, False), rtol=1e-5, atol=1e-5)
    check_gradients(make(f"num_output: 2 bias_term: false {FILLERS}"), make_blobs(x))


def test_param_gradients_add_and_bottom_gradient_overwrites():
    rng = np.random.default_rng(4)
    layer = make(f"num_output: 3 {FILLERS}")
    bottom, (top,) = run(layer, rng.standard_normal((5, 4)).astype(np.float32))
    top.diff[...] = rng.standard_normal(top.shape)
    layer.backward([top], [True], bottom)
    once = [b.diff.copy() for b in layer.blobs] + [bottom[0].diff.copy()]
    layer.backward([top], [True], bottom)
    np.testing.assert_allclose(layer.blobs[0].diff, 2 * once[0], rtol=1e-6)
    np.testing.assert_allclose(layer.blobs[1].diff, 2 * once[1], rtol=1e-6)
    np.testing.assert_array_equal(bottom[0].diff, once[2])
    np.testing.assert_allclose(once[1], top.diff.sum(axis=0), rtol=1e-6)
    np.testing.assert_allclose(once[0], top.diff.T @ bottom[0].data, rtol=1e-5)


def test_no_propagate_down_leaves_bottom_diff_alone():
    layer = make(f"num_output: 3 {FILLERS}")
    bottom, (top,) = run(layer, np.ones((2, 4), np.float32))
    bottom[0].diff[...] = 9
    top.diff[...] = 1
    layer.backward([top], [False], bottom)
    assert np.all(bottom[0].diff == 9)
    assert np.all(layer.blobs[0].diff == 2)


def test_lenet_shapes():
    layer = make("num_output: 500")
    _, (top,) = run(layer, np.zeros((64, 50, 4, 4), np.float32))
    assert layer.blobs[0].shape == (500, 800)
    assert layer.blobs[1].shape == (500,)
    assert top.shape == (64, 500)


def test_default_fillers_are_constant_zero():
    layer = make("num_output: 2")
    run(layer, np.ones((1, 3), np.float32))
    assert not layer.blobs[0].data.any() and not layer.blobs[1].data.any()


def test_batch_size_may_change_but_not_row_length():
    layer = make(f"num_output: 2 {FILLERS}")
    run(layer, np.zeros((4, 2, 3), np.float32))
    x = np.random.default_rng(5).standard_normal((7, 6)).astype(np.float32)
    bottom, top = make_blobs(x), [Blob()]
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, reference(x, layer.blobs[0].data, layer.blobs[1].data, 1, False),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(SiameseError, match="expect 6"):
        layer.reshape(make_blobs(np.zeros((4, 5), np.float32)), [Blob()])


@pytest.mark.parametrize("text, message", [("", "num_output"), ("num_output: 2 axis: 3", "axis 3")])
def test_bad_definitions_are_user_errors(text, message):
    with pytest.raises(SiameseError, match=message):
        run(make(text), np.zeros((2, 3), np.float32))
