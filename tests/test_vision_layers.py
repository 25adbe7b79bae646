"""Deconvolution, Im2col, Crop and SPP: values from loops written from Caffe's definitions, gradients checked."""
import numpy as np
import pytest

from gradcheck import check_gradients, make_blobs
from layerkit import make, run
from siamese_cli.errors import SiameseError

RNG = np.random.default_rng(21)
FILLERS = 'weight_filler { type: "gaussian" std: 0.5 } bias_filler { type: "gaussian" std: 0.5 }'


def data(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------- Deconvolution

def deconv_reference(x, weights, bias, stride, pad, dilation, group, num_output):
    n, c, h, w = x.shape
    _, og, kh, kw = weights.shape
    oh = stride * (h - 1) + dilation * (kh - 1) + 1 - 2 * pad
    ow = stride * (w - 1) + dilation * (kw - 1) + 1 - 2 * pad
    out = np.zeros((n, num_output, oh, ow))
    cg = c // group
    for b in range(n):
        for ch in range(c):
            first = (ch // cg) * og
            for y in range(h):
                for z in range(w):
                    for q in range(og):
                        for i in range(kh):
                            for j in range(kw):
                                row, col = y * stride - pad + i * dilation, z * stride - pad + j * dilation
                                if 0 <= row < oh and 0 <= col < ow:
                                    out[b, first + q, row, col] += x[b, ch, y, z] * weights[ch, q, i, j]
    if bias is not None:
        out += bias[None, :, None, None]
    return out


DECONV_CASES = [
    # (num_output, kernel, stride, pad, dilation, group, input shape)
    (3, 3, 1, 0, 1, 1, (2, 2, 3, 4)),
    (2, 4, 2, 1, 1, 1, (1, 3, 3, 3)),
    (4, 3, 2, 1, 2, 2, (2, 4, 3, 2)),
    (3, 2, 3, 0, 1, 3, (1, 3, 2, 3)),
]


@pytest.mark.parametrize("num_output, kernel, stride, pad, dilation, group, shape", DECONV_CASES)
def test_deconvolution_values_and_gradients(num_output, kernel, stride, pad, dilation, group, shape):
    text = (f"convolution_param {{ num_output: {num_output} kernel_size: {kernel} stride: {stride} pad: {pad} "
            f"dilation: {dilation} group: {group} {FILLERS} }}")
    x = data(*shape)
    layer = make("Deconvolution", text)
    _, (top,) = run(layer, x)
    assert layer.blobs[0].shape == (shape[1], num_output // group, kernel, kernel)
    expected = deconv_reference(x, layer.blobs[0].data, layer.blobs[1].data, stride, pad, dilation, group, num_output)
    assert top.shape == expected.shape
    np.testing.assert_allclose(top.data, expected, rtol=1e-5, atol=1e-5)
    check_gradients(make("Deconvolution", text), make_blobs(x))


def test_bilinear_deconvolution_upsamples_by_interpolation():
    # Caffe's FCN recipe for 2x upsampling: kernel 2f - f % 2 = 4, stride 2, pad ceil((f - 1) / 2) = 1, group C.
    text = ('convolution_param { num_output: 2 group: 2 kernel_size: 4 stride: 2 pad: 1 bias_term: false '
            'weight_filler { type: "bilinear" } }')
    ramp = np.tile(np.arange(5, dtype=np.float32), (2, 5, 1))[None]  # (1, 2, 5, 5), rising along W
    _, (top,) = run(make("Deconvolution", text), ramp)
    assert top.shape == (1, 2, 10, 10)
    # Away from the border, the output interpolates linearly at half-pixel steps.
    np.testing.assert_allclose(top.data[0, :, 1:-1, 1:-1], np.broadcast_to(np.arange(1, 9) / 2 - 0.25, (2, 8, 8)),
                               rtol=1e-6)


# ---------------------------------------------------------------- Im2col

def im2col_reference(x, kernel, stride, pad):
    n, c, h, w = x.shape
    oh, ow = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
    out = np.zeros((n, c * kernel * kernel, oh, ow), np.float32)
    for ch in range(c):
        for i in range(kernel):
            for j in range(kernel):
                row = (ch * kernel + i) * kernel + j
                for y in range(oh):
                    for z in range(ow):
                        r, s = y * stride - pad + i, z * stride - pad + j
                        if 0 <= r < h and 0 <= s < w:
                            out[:, row, y, z] = x[:, ch, r, s]
    return out


@pytest.mark.parametrize("kernel, stride, pad", [(3, 1, 1), (2, 2, 0), (3, 2, 1)])
def test_im2col_values_and_gradients(kernel, stride, pad):
    x = data(2, 3, 5, 4)
    text = f"convolution_param {{ kernel_size: {kernel} stride: {stride} pad: {pad} }}"
    _, (top,) = run(make("Im2col", text), x)
    np.testing.assert_array_equal(top.data, im2col_reference(x, kernel, stride, pad))
    check_gradients(make("Im2col", text), make_blobs(x))


# ---------------------------------------------------------------- Crop

@pytest.mark.parametrize("text, size_shape, window", [
    ("", (1, 1, 3, 2), (slice(None), slice(None), slice(0, 3), slice(0, 2))),
    ("crop_param { offset: 1 }", (7, 7, 3, 2), (slice(None), slice(None), slice(1, 4), slice(1, 3))),
    ("crop_param { axis: 1 offset: 1 offset: 2 offset: 0 }", (2, 2, 2, 4),
     (slice(None), slice(1, 3), slice(2, 4), slice(0, 4))),
    ("crop_param { axis: -1 offset: 2 }", (9, 9, 9, 3), (slice(None), slice(None), slice(None), slice(2, 5))),
])
def test_crop_values_and_gradient(text, size_shape, window):
    x = data(2, 4, 5, 5)
    size = np.zeros(size_shape, np.float32)
    _, (top,) = run(make("Crop", text), x, size)
    np.testing.assert_array_equal(top.data, x[window])
    check_gradients(make("Crop", text), make_blobs(x, size), check_bottom=[0])


def test_crop_out_of_bounds_and_offset_count_refused():
    with pytest.raises(SiameseError, match="runs past"):
        run(make("Crop", "crop_param { offset: 3 }"), data(1, 1, 5, 5), data(1, 1, 3, 3))
    with pytest.raises(SiameseError, match="2 offsets given for 3 cropped axes"):
        run(make("Crop", "crop_param { axis: 1 offset: 1 offset: 1 }"), data(1, 3, 5, 5), data(1, 1, 3, 3))


# ---------------------------------------------------------------- SPP

def spp_reference(x, height, reduce):
    n, c, h, w = x.shape
    parts = []
    for level in range(height):
        bins = 2 ** level
        kh, kw = -(-h // bins), -(-w // bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        oh = -(-(h + 2 * ph - kh) // kh) + 1
        ow = -(-(w + 2 * pw - kw) // kw) + 1
        oh -= 1 if ph and (oh - 1) * kh >= h + ph else 0
        ow -= 1 if pw and (ow - 1) * kw >= w + pw else 0
        out = np.zeros((n, c, oh, ow))
        for y in range(oh):
            for z in range(ow):
                rows = slice(max(y * kh - ph, 0), min(y * kh - ph + kh, h))
                cols = slice(max(z * kw - pw, 0), min(z * kw - pw + kw, w))
                if reduce == "max":
                    out[:, :, y, z] = x[:, :, rows, cols].max(axis=(2, 3))
                else:  # divided by the window clipped to the padded input
                    height_ = min(y * kh - ph + kh, h + ph) - (y * kh - ph)
                    width_ = min(z * kw - pw + kw, w + pw) - (z * kw - pw)
                    out[:, :, y, z] = x[:, :, rows, cols].sum(axis=(2, 3)) / (height_ * width_)
        parts.append(out.reshape(n, -1))
    return np.concatenate(parts, axis=1)


@pytest.mark.parametrize("height, pool, shape", [(3, "MAX", (2, 3, 13, 11)), (2, "AVE", (1, 2, 5, 7)),
                                                 (3, "AVE", (2, 2, 6, 6))])
def test_spp_values(height, pool, shape):
    x = data(*shape)
    _, (top,) = run(make("SPP", f"spp_param {{ pyramid_height: {height} pool: {pool} }}"), x)
    expected = spp_reference(x, height, pool.lower())
    assert top.shape == expected.shape
    np.testing.assert_allclose(top.data, expected, rtol=1e-5, atol=1e-6)


def test_spp_single_level_is_the_pooled_blob():
    x = data(2, 3, 4, 5)
    _, (top,) = run(make("SPP", "spp_param { pyramid_height: 1 }"), x)
    assert top.shape == (2, 3, 1, 1)
    np.testing.assert_array_equal(top.data[:, :, 0, 0], x.max(axis=(2, 3)))


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_spp_gradients(pool):
    x = np.random.default_rng(3).permutation(2 * 2 * 6 * 8).reshape(2, 2, 6, 8).astype(np.float32) / 10
    check_gradients(make("SPP", f"spp_param {{ pyramid_height: 3 pool: {pool} }}"), make_blobs(x))
