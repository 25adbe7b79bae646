"""LRN: forward against loops written from Caffe's definition, gradients against central differences."""
import numpy as np
import pytest

from gradcheck import check_gradients, make_blobs
from layerkit import make, run, separate_and_in_place_gradients
from siamese_cli.errors import SiameseError


def across_reference(x, size, alpha, beta, k):
    x = x.astype(np.float64)
    n, c, h, w = x.shape
    out = np.zeros_like(x)
    half = (size - 1) // 2
    for b in range(n):
        for ch in range(c):
            total = sum(x[b, j] ** 2 for j in range(ch - half, ch + half + 1) if 0 <= j < c)
            out[b, ch] = x[b, ch] * (k + alpha / size * total) ** -beta
    return out


def within_reference(x, size, alpha, beta):
    x = x.astype(np.float64)
    n, c, h, w = x.shape
    out = np.zeros_like(x)
    half = (size - 1) // 2
    for b in range(n):
        for ch in range(c):
            for y in range(h):
                for z in range(w):
                    total = sum(x[b, ch, i, j] ** 2 for i in range(y - half, y + half + 1)
                                for j in range(z - half, z + half + 1) if 0 <= i < h and 0 <= j < w)
                    out[b, ch, y, z] = x[b, ch, y, z] * (1 + alpha * total / size ** 2) ** -beta
    return out


RNG = np.random.default_rng(5)


@pytest.mark.parametrize("size, alpha, beta, k", [(5, 1e-4, 0.75, 1.0), (3, 0.5, 0.6, 2.0), (1, 1.0, 1.0, 1.0)])
def test_across_channels_matches_definition(size, alpha, beta, k):
    x = (RNG.standard_normal((2, 7, 3, 4)) * 3).astype(np.float32)
    layer = make("LRN", f"lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: {k} }}")
    _, (top,) = run(layer, x)
    np.testing.assert_allclose(top.data, across_reference(x, size, alpha, beta, k), rtol=1e-5, atol=1e-6)


def test_defaults_are_caffes():
    layer = make("LRN")
    run(layer, np.ones((1, 6, 2, 2), np.float32))
    assert (layer.size, layer.alpha, layer.beta, layer.k) == (5, np.float32(1), np.float32(0.75), np.float32(1))


@pytest.mark.parametrize("size, alpha, beta", [(3, 0.8, 0.75), (5, 2.0, 0.5)])
def test_within_channel_matches_definition(size, alpha, beta):
    x = (RNG.standard_normal((2, 2, 5, 6)) * 2).astype(np.float32)
    layer = make("LRN", f"lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: 7 norm_region: WITHIN_CHANNEL }}")
    _, (top,) = run(layer, x)
    np.testing.assert_allclose(top.data, within_reference(x, size, alpha, beta), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("text", ["local_size: 3 alpha: 0.9 beta: 0.75 k: 1.5",
                                  "local_size: 3 alpha: 0.9 beta: 0.75 norm_region: WITHIN_CHANNEL"])
def test_gradients(text):
    x = RNG.standard_normal((2, 5, 3, 4)).astype(np.float32)
    check_gradients(make("LRN", f"lrn_param {{ {text} }}"), make_blobs(x), step=1e-3)


def test_in_place_gives_the_same_gradient():
    x = RNG.standard_normal((1, 4, 3, 3)).astype(np.float32)
    dy = RNG.standard_normal(x.shape).astype(np.float32)
    (separate, _), (in_place, _) = separate_and_in_place_gradients(
        lambda: make("LRN", "lrn_param { local_size: 3 alpha: 0.9 }"), x, dy)
    np.testing.assert_allclose(separate, in_place, rtol=1e-6)


def test_even_size_and_non_4d_refused():
    with pytest.raises(SiameseError, match="odd"):
        run(make("LRN", "lrn_param { local_size: 4 }"), np.ones((1, 4, 2, 2), np.float32))
    with pytest.raises(SiameseError, match="4-D"):
        run(make("LRN"), np.ones((2, 4), np.float32))
