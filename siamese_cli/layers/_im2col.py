"""Plain 2-D im2col / col2im over (N, C, H, W) arrays, for Im2col and Deconvolution.

Columns are (N, C, kh, kw, oh, ow): row (c, i, j) of Caffe's column buffer holds, for each
output position, the input pixel that kernel offset (i, j) of channel c reads (0 in the padding).
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._geometry import conv_out_size


def out_hw(hw, geometry):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geometry
    return conv_out_size(hw[0], kh, sh, ph, dh), conv_out_size(hw[1], kw, sw, pw, dw)


def _padded_size(hw, geometry):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geometry
    oh, ow = out_hw(hw, geometry)
    return (max(hw[0] + 2 * ph, (oh - 1) * sh + dh * (kh - 1) + 1),
            max(hw[1] + 2 * pw, (ow - 1) * sw + dw * (kw - 1) + 1))


def im2col(x, geometry):
    """(N, C, H, W) -> columns (N, C, kh, kw, oh, ow)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geometry
    n, c, h, w = x.shape
    oh, ow = out_hw((h, w), geometry)
    padded = np.zeros((n, c) + _padded_size((h, w), geometry), np.float32)
    padded[:, :, ph:ph + h, pw:pw + w] = x
    sn, sc, sy, sx = padded.strides
    windows = as_strided(padded, (n, c, kh, kw, oh, ow), (sn, sc, sy * dh, sx * dw, sy * sh, sx * sw),
                         writeable=False)
    return np.ascontiguousarray(windows)


def col2im(columns, geometry, hw):
    """Columns (N, C, kh, kw, oh, ow) -> (N, C, H, W), adding where windows overlap."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = geometry
    n, c, _, _, oh, ow = columns.shape
    padded = np.zeros((n, c) + _padded_size(hw, geometry), np.float32)
    for i in range(kh):
        for j in range(kw):
            padded[:, :, i * dh:i * dh + (oh - 1) * sh + 1:sh, j * dw:j * dw + (ow - 1) * sw + 1:sw] += columns[:, :, i, j]
    return padded[:, :, ph:ph + hw[0], pw:pw + hw[1]]
