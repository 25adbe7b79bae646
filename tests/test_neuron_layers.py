"""The neuron layers of Caffe's catalogue: values from Caffe's formulas in float64, gradients by central differences."""
import numpy as np
import pytest

import layerkit
from gradcheck import check_gradients, make_blobs
from siamese_cli.errors import SiameseError
RNG = np.random.default_rng(2024)

def make(type_name, text="", seed=0):
    return layerkit.make(type_name, text, phase="TRAIN", seed=seed)


def forward(layer, x, in_place=False):
    (bottom,) = make_blobs(x)
    top = layerkit.setup_forward(layer, [bottom], [bottom] if in_place else None)
    return bottom, top[0]


def away_from(rng, shape, points=(0.0,), gap=0.05, scale=2.0):
    """Values at least `gap` from every kink, so central differences do not straddle one."""
    x = rng.uniform(-scale, scale, shape)
    for point in points:
        near = np.abs(x - point) < gap
        x[near] = point + np.where(x[near] >= point, gap, -gap) * 2
    return x.astype(np.float32)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# Each case: type, parameters, reference y(x) in float64, kinks to keep away from, input range.
CASES = [
    ("AbsVal", "", np.abs, (0.0,), 2.0),
    ("BNLL", "", lambda x: np.log(1 + np.exp(x)), (), 3.0),
    ("ELU", "", lambda x: np.where(x > 0, x, np.exp(x) - 1), (0.0,), 2.0),
    ("ELU", "elu_param { alpha: 0.5 }", lambda x: np.where(x > 0, x, 0.5 * (np.exp(x) - 1)), (0.0,), 2.0),
    ("Exp", "", np.exp, (), 1.5),
    ("Exp", "exp_param { base: 2 scale: 0.5 shift: 1 }", lambda x: 2.0 ** (1 + 0.5 * x), (), 2.0),
    ("Exp", "exp_param { scale: -2 shift: 0.3 }", lambda x: np.exp(0.3 - 2 * x), (), 1.0),
    ("Log", "log_param { shift: 3 }", lambda x: np.log(3 + x), (), 2.0),
    ("Log", "log_param { base: 10 scale: 2 shift: 5 }", lambda x: np.log10(5 + 2 * x), (), 2.0),
    ("Clip", "clip_param { min: -0.5 max: 1 }", lambda x: np.minimum(np.maximum(x, -0.5), 1.0), (-0.5, 1.0), 2.0),
    ("Swish", "", lambda x: x * sigmoid(x), (), 3.0),
    ("Swish", "swish_param { beta: 2.5 }", lambda x: x * sigmoid(2.5 * x), (), 2.0),
    ("ReLU", "relu_param { negative_slope: 0.2 }", lambda x: np.where(x > 0, x, 0.2 * x), (0.0,), 2.0),
]


@pytest.mark.parametrize("kind,text,reference,kinks,scale", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_values_gradient_and_in_place(kind, text, reference, kinks, scale):
    x = away_from(RNG, (2, 3, 2, 2), kinks, scale=scale)
    _, top = forward(make(kind, text), x)
    np.testing.assert_allclose(top.data, reference(x.astype(np.float64)), rtol=2e-6, atol=1e-6)
    check_gradients(make(kind, text), make_blobs(x), step=1e-3)

    # In place gives the same values and the same bottom gradient.
    dy = RNG.standard_normal(x.shape).astype(np.float32)
    layer = make(kind, text)
    bottom, top = forward(layer, x)
    top.diff[...] = dy
    layer.backward([top], [True], [bottom])
    layer = make(kind, text)
    shared, _ = forward(layer, x, in_place=True)
    np.testing.assert_array_equal(shared.data, top.data)
    shared.diff[...] = dy
    layer.backward([shared], [True], [shared])
    np.testing.assert_allclose(shared.diff, bottom.diff, rtol=1e-6)


def test_bnll_extremes_do_not_overflow():
    _, top = forward(make("BNLL"), np.array([-100.0, 0.0, 100.0], np.float32))
    np.testing.assert_allclose(top.data, [np.exp(-100.0), np.log(2.0), 100.0], rtol=1e-6, atol=1e-40)


def test_absval_gradient_is_zero_at_zero():
    layer = make("AbsVal")
    bottom, top = forward(layer, np.array([-1.5, 0.0, 2.0], np.float32))
    top.diff[...] = 3
    layer.backward([top], [True], [bottom])
    np.testing.assert_array_equal(bottom.diff, [-3, 0, 3])


def test_exp_and_log_refuse_a_nonpositive_base():
    with pytest.raises(SiameseError, match="base must be positive"):
        forward(make("Exp", "exp_param { base: 0 }"), np.ones(2, np.float32))
    with pytest.raises(SiameseError, match="base must be positive"):
        forward(make("Log", "log_param { base: -2 }"), np.ones(2, np.float32))


def test_threshold_values_and_no_backward():
    x = np.array([[-1.0, 0.3, 0.5, 0.7]], np.float32)
    layer = make("Threshold", "threshold_param { threshold: 0.5 }")
    bottom, top = forward(layer, x)
    np.testing.assert_array_equal(top.data, [[0, 0, 0, 1]])
    _, top = forward(make("Threshold"), x)
    np.testing.assert_array_equal(top.data, [[0, 1, 1, 1]])
    assert not layer.allow_backward(0)
    with pytest.raises(SiameseError, match="no backward"):
        layer.backward([top], [True], [bottom])


def test_clip_needs_min_and_max():
    with pytest.raises(SiameseError, match="min and max"):
        forward(make("Clip", "clip_param { min: 0 }"), np.ones(2, np.float32))


def prelu_reference(x, slopes):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return np.where(x > 0, x, np.reshape(slopes, shape) * x)


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 4), (2, 3, 2, 2, 2)])
def test_prelu_per_channel(shape):
    x = away_from(RNG, shape)
    layer = make("PReLU")
    _, top = forward(layer, x)
    assert layer.blobs[0].shape == (3,)
    np.testing.assert_array_equal(layer.blobs[0].data, [0.25] * 3)
    np.testing.assert_allclose(top.data, prelu_reference(x.astype(np.float64), [0.25] * 3), rtol=1e-7)

    layer = make("PReLU", 'prelu_param { filler { type: "uniform" min: -0.5 max: 0.9 } }')
    _, top = forward(layer, x)
    slopes = layer.blobs[0].data.astype(np.float64)
    assert len(set(slopes.tolist())) == 3
    np.testing.assert_allclose(top.data, prelu_reference(x.astype(np.float64), slopes), rtol=1e-6)
    check_gradients(layer, make_blobs(x), setup=False, step=1e-3)


def test_prelu_slope_gradient_values_and_channel_shared():
    x = np.array([[[-1.0, 2.0], [-3.0, -0.5]], [[0.5, -2.0], [4.0, -1.0]]], np.float32)  # N=2, C=2, 2 positions
    dy = np.array([[[1.0, 1.0], [2.0, 1.0]], [[1.0, 3.0], [1.0, -1.0]]], np.float32)
    layer = make("PReLU")
    bottom, top = forward(layer, x)
    top.diff[...] = dy
    layer.backward([top], [True], [bottom])
    # Channel 0 negatives: -1 (dy 1), -2 (dy 3); channel 1: -3 (dy 2), -0.5 (dy 1), -1 (dy -1).
    np.testing.assert_allclose(layer.blobs[0].diff, [-1 - 6, -6 - 0.5 + 1])
    np.testing.assert_allclose(bottom.diff, np.where(x > 0, dy, 0.25 * dy))

    shared = make("PReLU", "prelu_param { channel_shared: true }")
    bottom, top = forward(shared, x)
    assert shared.blobs[0].shape == ()
    top.diff[...] = dy
    shared.backward([top], [True], [bottom])
    np.testing.assert_allclose(shared.blobs[0].diff, -7 - 5.5)
    check_gradients(make("PReLU", "prelu_param { channel_shared: true }"), make_blobs(away_from(RNG, (2, 3, 4))),
                    step=1e-3)


def test_prelu_in_place_slope_gradient():
    x = away_from(RNG, (2, 3, 4))
    dy = RNG.standard_normal(x.shape).astype(np.float32)
    separate = make("PReLU", 'prelu_param { filler { type: "uniform" } }')
    bottom, top = forward(separate, x)
    top.diff[...] = dy
    separate.backward([top], [True], [bottom])
    inplace = make("PReLU", 'prelu_param { filler { type: "uniform" } }')
    shared, _ = forward(inplace, x, in_place=True)
    shared.diff[...] = dy
    inplace.backward([shared], [True], [shared])
    np.testing.assert_allclose(inplace.blobs[0].diff, separate.blobs[0].diff, rtol=1e-6)
    np.testing.assert_allclose(shared.diff, bottom.diff, rtol=1e-6)


def test_prelu_needs_two_axes():
    with pytest.raises(SiameseError, match="at least 2 axes"):
        forward(make("PReLU"), np.ones(3, np.float32))
