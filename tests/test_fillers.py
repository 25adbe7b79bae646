"""Fillers follow Caffe's definitions: ranges, scales and fan computations."""
import numpy as np
import pytest

from siamese_cli.errors import SiameseError
from siamese_cli.fillers import fill
from siamese_cli.io.prototxt import parse_text
from siamese_cli.proto import caffe_pb2


def draw(text, shape, seed=0):
    return fill(parse_text(text, caffe_pb2.FillerParameter()), shape, np.random.default_rng(seed))


def test_constant_default_is_zero_and_value_is_used():
    assert not draw("", (3, 4)).any()
    np.testing.assert_array_equal(draw('type: "constant" value: 0.25', (5,)), np.full(5, 0.25, np.float32))


def test_uniform_and_gaussian():
    values = draw('type: "uniform" min: -2 max: 3', (200, 50))
    assert values.dtype == np.float32 and values.min() >= -2 and values.max() <= 3
    assert values.mean() == pytest.approx(0.5, abs=0.05)
    values = draw('type: "gaussian" mean: 1 std: 0.5', (200, 50))
    assert values.mean() == pytest.approx(1, abs=0.02) and values.std() == pytest.approx(0.5, abs=0.02)


def test_gaussian_sparse_keeps_sparse_over_num_outputs():
    values = draw('type: "gaussian" std: 1 sparse: 5', (50, 400))  # keep probability 5/50
    assert np.count_nonzero(values) / values.size == pytest.approx(0.1, abs=0.01)


@pytest.mark.parametrize("norm, n", [("FAN_IN", 20 * 5 * 5), ("FAN_OUT", 50 * 5 * 5), ("AVERAGE", (500 + 1250) / 2)])
def test_xavier_bound_uses_fan(norm, n):
    values = draw(f'type: "xavier" variance_norm: {norm}', (50, 20, 5, 5))
    bound = np.sqrt(3.0 / n)
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.97 * bound  # the range is really used
    assert values.var() == pytest.approx(1.0 / n, rel=0.05)


@pytest.mark.parametrize("norm, n", [("FAN_IN", 20 * 3 * 3), ("FAN_OUT", 60 * 3 * 3), ("AVERAGE", (180 + 540) / 2)])
def test_msra_std_uses_fan(norm, n):
    values = draw(f'type: "msra" variance_norm: {norm}', (60, 20, 3, 3))
    assert values.mean() == pytest.approx(0, abs=0.01)
    assert values.std() == pytest.approx(np.sqrt(2.0 / n), rel=0.03)


def test_msra_default_is_fan_in():
    values = draw('type: "msra"', (100, 800))
    assert values.std() == pytest.approx(np.sqrt(2.0 / 800), rel=0.03)


def test_bilinear_is_caffes_upsampling_kernel():
    # k = 4 (upsampling by 2): f = 2, c = 0.75, taps 1 - |x/2 - 0.75| = 0.25, 0.75, 0.75, 0.25.
    taps = np.array([0.25, 0.75, 0.75, 0.25])
    values = draw('type: "bilinear"', (3, 1, 4, 4))
    for kernel in values[:, 0]:
        np.testing.assert_allclose(kernel, np.outer(taps, taps), rtol=1e-6)
    # k = 3: f = 2, c = 0.5, taps 0.5, 1, 0.5.
    np.testing.assert_allclose(draw('type: "bilinear"', (1, 2, 3, 3))[0, 1], np.outer([0.5, 1, 0.5], [0.5, 1, 0.5]))
    with pytest.raises(SiameseError, match="square"):
        draw('type: "bilinear"', (1, 1, 3, 4))


@pytest.mark.parametrize("kind", ["constant", "uniform", "xavier", "msra", "positive_unitball", "bilinear"])
def test_sparse_is_refused_except_for_gaussian(kind):
    with pytest.raises(SiameseError, match=f'filler "{kind}" does not support sparse'):
        draw(f'type: "{kind}" sparse: 3', (4, 4, 2, 2))


def test_positive_unitball_rows_sum_to_one():
    values = draw('type: "positive_unitball"', (6, 3, 2))
    assert (values >= 0).all()
    np.testing.assert_allclose(values.reshape(6, -1).sum(axis=1), np.ones(6), rtol=1e-6)


def test_same_seed_same_draw_and_unknown_type():
    np.testing.assert_array_equal(draw('type: "xavier"', (4, 4), seed=3), draw('type: "xavier"', (4, 4), seed=3))
    with pytest.raises(SiameseError, match='unknown filler type "bicubic"'):
        draw('type: "bicubic"', (2, 2))
