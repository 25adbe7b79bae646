"""BatchNorm, Scale, Bias and MVN: values from Caffe's definitions, gradients against central differences."""
import numpy as np
import pytest

from gradcheck import check_gradients, make_blobs
from layerkit import make, run, separate_and_in_place_gradients
from siamese_cli.blob import Blob
from siamese_cli.errors import SiameseError
from siamese_cli.io.prototxt import parse_text
from siamese_cli.net import Net
from siamese_cli.proto import caffe_pb2

RNG = np.random.default_rng(11)


def data(*shape, scale=1.0, shift=0.0):
    return (RNG.standard_normal(shape) * scale + shift).astype(np.float32)


# ---------------------------------------------------------------- BatchNorm

def test_batch_norm_train_normalises_with_batch_statistics_and_accumulates(kernel_path):
    x = data(4, 3, 2, 5, scale=2, shift=1)
    layer = make("BatchNorm", "batch_norm_param { moving_average_fraction: 0.9 eps: 0.001 }", phase="TRAIN")
    _, (top,) = run(layer, x)
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2, 3))
    var = ((x64 - mean[None, :, None, None]) ** 2).mean(axis=(0, 2, 3))
    expected = (x64 - mean[None, :, None, None]) / np.sqrt(var + 1e-3)[None, :, None, None]
    np.testing.assert_allclose(top.data, expected, rtol=1e-4, atol=1e-5)
    m = 4 * 2 * 5
    np.testing.assert_allclose(layer.blobs[0].data, mean, rtol=1e-5)
    np.testing.assert_allclose(layer.blobs[1].data, var * m / (m - 1), rtol=1e-5)
    assert layer.blobs[2].data[0] == 1
    layer.forward(make_blobs(x), [top])  # a second pass: s = 0.9 + 1, sums = batch + 0.9 * sums
    np.testing.assert_allclose(layer.blobs[2].data, [1.9])
    np.testing.assert_allclose(layer.blobs[0].data, 1.9 * mean, rtol=1e-5)
    np.testing.assert_allclose(layer.blobs[1].data, 1.9 * var * m / (m - 1), rtol=1e-5)


def test_batch_norm_test_phase_uses_stored_sums_divided_by_the_factor(kernel_path):
    x = data(2, 3, 4)
    layer = make("BatchNorm")
    assert layer.frozen_params
    bottom = make_blobs(x)
    top = [Blob()]
    layer.setup(bottom, top)
    assert layer.use_global_stats and [b.shape for b in layer.blobs] == [(3,), (3,), (1,)]
    layer.blobs[0].data[...] = [2.0, -4.0, 1.0]
    layer.blobs[1].data[...] = [8.0, 2.0, 0.5]
    layer.blobs[2].data[...] = 2.0
    layer.reshape(bottom, top)
    layer.forward(bottom, top)
    mean, var = np.array([1.0, -2.0, 0.5]), np.array([4.0, 1.0, 0.25])
    std = np.sqrt(var + 1e-5)[None, :, None]
    np.testing.assert_allclose(top[0].data, (x - mean[None, :, None]) / std, rtol=1e-5, atol=1e-6)
    dy = data(2, 3, 4)
    top[0].diff[...] = dy
    layer.backward(top, [True], bottom)
    np.testing.assert_allclose(bottom[0].diff, dy / std, rtol=1e-5)
    layer.blobs[2].data[...] = 0  # a zero factor means zero statistics
    layer.forward(bottom, top)
    np.testing.assert_allclose(top[0].data, x / np.sqrt(1e-5), rtol=1e-5)


@pytest.mark.parametrize("shape", [(3, 2, 3, 2), (4, 3), (2, 2, 2, 2, 2)])
def test_batch_norm_train_gradient(shape, kernel_path):
    layer = make("BatchNorm", "batch_norm_param { eps: 0.01 }", phase="TRAIN")
    check_gradients(layer, make_blobs(data(*shape, scale=2)), step=1e-3)


def test_batch_norm_in_place_gradient_equals_separate_top(kernel_path):
    x, dy = data(3, 2, 4), data(3, 2, 4)
    (separate, _), (in_place, _) = separate_and_in_place_gradients(lambda: make("BatchNorm", phase="TRAIN"), x, dy)
    np.testing.assert_allclose(separate, in_place, rtol=1e-6)


BN_NET = """
input: "data" input_shape { dim: 2 dim: 3 dim: 4 dim: 4 }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" %s }
layer { name: "scale" type: "Scale" bottom: "data" top: "data" scale_param { bias_term: true } }
"""


def test_net_gives_batch_norm_blobs_lr_mult_zero_and_refuses_learning_them():
    net = Net(parse_text(BN_NET % "", caffe_pb2.NetParameter()), phase="TRAIN")
    mults = [(p.name, p.lr_mult) for p in net.learnable_params]
    assert mults == [("bn[0]", 0), ("bn[1]", 0), ("bn[2]", 0), ("scale[0]", 1), ("scale[1]", 1)]
    net = Net(parse_text(BN_NET % "param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 }",
                         caffe_pb2.NetParameter()), phase="TRAIN")
    assert [p.lr_mult for p in net.learnable_params][:3] == [0, 0, 0]
    with pytest.raises(SiameseError, match='"bn" \\(BatchNorm\\): param 1 has lr_mult 1'):
        Net(parse_text(BN_NET % "param { lr_mult: 0 } param { decay_mult: 0 }", caffe_pb2.NetParameter()))


# ---------------------------------------------------------------- Scale and Bias

def broadcast_reference(x, operand, axis):
    shape = [1] * x.ndim
    shape[axis:axis + operand.ndim] = operand.shape
    return operand.reshape(shape)


SCALE_CASES = [
    # (param text, bottom shape, axis used, operand shape)
    ("", (2, 3, 4, 2), 1, (3,)),
    ("axis: 0 num_axes: -1", (2, 3, 2), 0, (2, 3, 2)),
    ("axis: -2 num_axes: 2", (2, 3, 4, 2), 2, (4, 2)),
    ("num_axes: 0", (2, 3, 2), 0, ()),
    ("axis: 1 num_axes: 2", (3, 2, 4), 1, (2, 4)),
]


@pytest.mark.parametrize("text, shape, axis, operand_shape", SCALE_CASES)
def test_scale_learned_factor_and_bias(text, shape, axis, operand_shape, kernel_path):
    x = data(*shape)
    layer = make("Scale", f'scale_param {{ {text} bias_term: true filler {{ type: "gaussian" }} '
                          f'bias_filler {{ type: "gaussian" }} }}')
    _, (top,) = run(layer, x)
    factor, bias = layer.blobs[0].data, layer.blobs[1].data
    assert factor.shape == operand_shape and bias.shape == operand_shape
    expected = x * broadcast_reference(x, factor, axis) + broadcast_reference(x, bias, axis)
    np.testing.assert_allclose(top.data, expected, rtol=1e-6, atol=1e-6)
    check_gradients(make("Scale", f'scale_param {{ {text} bias_term: true filler {{ type: "gaussian" }} '
                                  f'bias_filler {{ type: "gaussian" }} }}'), make_blobs(x))


def test_scale_defaults_to_a_factor_of_one_and_no_bias(kernel_path):
    x = data(2, 3, 2)
    layer = make("Scale")
    _, (top,) = run(layer, x)
    assert len(layer.blobs) == 1
    np.testing.assert_array_equal(layer.blobs[0].data, np.ones(3, np.float32))
    np.testing.assert_array_equal(top.data, x)


@pytest.mark.parametrize("text, operand_shape, axis", [("", (3,), 1), ("axis: 0", (2, 3), 0), ("", (), 0)])
def test_scale_by_a_second_bottom(text, operand_shape, axis, kernel_path):
    x, factor = data(2, 3, 4), data(*operand_shape)
    layer = make("Scale", f"scale_param {{ {text} bias_term: true bias_filler {{ type: 'gaussian' }} }}")
    _, (top,) = run(layer, x, factor)
    assert len(layer.blobs) == 1 and layer.blobs[0].shape == operand_shape
    expected = x * broadcast_reference(x, factor, axis) + broadcast_reference(x, layer.blobs[0].data, axis)
    np.testing.assert_allclose(top.data, expected, rtol=1e-6, atol=1e-6)
    check_gradients(make("Scale", f"scale_param {{ {text} bias_term: true bias_filler {{ type: 'gaussian' }} }}"),
                    make_blobs(x, factor))


def test_scale_in_place_gradient(kernel_path):
    x, dy = data(2, 3, 2), data(2, 3, 2)
    results = [(bottom, params[0]) for bottom, params in separate_and_in_place_gradients(
        lambda: make("Scale", "scale_param { filler { type: 'gaussian' } }"), x, dy)]
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_scale_shape_mismatch_is_refused():
    with pytest.raises(SiameseError, match="does not match bottom"):
        run(make("Scale"), data(2, 3, 4), data(4))
    with pytest.raises(SiameseError, match="run past"):
        run(make("Scale", "scale_param { axis: 2 num_axes: 2 }"), data(2, 3, 4))


@pytest.mark.parametrize("text, shape, axis, operand_shape", SCALE_CASES)
def test_bias_learned(text, shape, axis, operand_shape):
    x = data(*shape)
    layer = make("Bias", f'bias_param {{ {text} filler {{ type: "gaussian" }} }}')
    _, (top,) = run(layer, x)
    assert layer.blobs[0].shape == operand_shape
    np.testing.assert_allclose(top.data, x + broadcast_reference(x, layer.blobs[0].data, axis), rtol=1e-6)
    check_gradients(make("Bias", f'bias_param {{ {text} filler {{ type: "gaussian" }} }}'), make_blobs(x))


def test_bias_default_filler_is_zero_and_second_bottom():
    x, b = data(2, 3, 4), data(3, 4)
    layer = make("Bias")
    run(layer, x)
    assert not layer.blobs[0].data.any()
    layer = make("Bias")
    _, (top,) = run(layer, x, b)
    np.testing.assert_allclose(top.data, x + b[None], rtol=1e-6)
    check_gradients(make("Bias"), make_blobs(x, b))


# ---------------------------------------------------------------- MVN

def mvn_reference(x, normalize_variance=True, across_channels=False, eps=1e-9):
    x = x.astype(np.float64)
    axes = (1, 2, 3) if across_channels else (2, 3)
    centred = x - x.mean(axis=axes, keepdims=True)
    if not normalize_variance:
        return centred
    return centred / (np.sqrt((centred ** 2).mean(axis=axes, keepdims=True)) + eps)


@pytest.mark.parametrize("normalize_variance", [True, False])
@pytest.mark.parametrize("across_channels", [True, False])
def test_mvn_values_and_gradient(normalize_variance, across_channels):
    x = data(2, 3, 3, 4, scale=3, shift=2)
    text = (f"mvn_param {{ normalize_variance: {str(normalize_variance).lower()} "
            f"across_channels: {str(across_channels).lower()} }}")
    _, (top,) = run(make("MVN", text), x)
    np.testing.assert_allclose(top.data, mvn_reference(x, normalize_variance, across_channels), rtol=1e-4, atol=1e-5)
    check_gradients(make("MVN", text), make_blobs(x), step=1e-3)


def test_mvn_eps_is_added_after_the_square_root():
    x = np.array([[[[1.0, 3.0]]]], np.float32)  # mean 2, std 1
    _, (top,) = run(make("MVN", "mvn_param { eps: 0.5 }"), x)
    np.testing.assert_allclose(top.data.ravel(), [-1 / 1.5, 1 / 1.5], rtol=1e-6)
