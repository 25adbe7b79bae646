"""Caffe's Convolution layer: 2-D, grouped, dilated, as im2col plus one float32 matmul per group.

The whole batch goes through one matmul. Columns are laid out (C, kh, kw, <positions>) where
<positions> is either (N, outH, outW) or, when output rows are short, (outH, outW, N): with the
batch innermost every copy in im2col/col2im moves long contiguous runs instead of rows of a
few pixels, which matters more than the extra transposes of input and output.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..blob import Blob
from ..fillers import fill
from . import _implicit, _pointwise
from ._common import WorkBuffers
from ._depthwise import Depthwise
from ._geometry import conv_geometry, conv_out_size
from .base import Layer

#: Columns above this many bytes are built a slice of the batch at a time (and rebuilt in backward).
COLUMN_BUDGET = 32 << 20
#: Output rows shorter than this use the batch-innermost layout.
SHORT_ROW = 16


def _view(array, shape):
    """`array` reshaped without a copy (an error rather than silently writing into a copy)."""
    view = array.view()
    view.shape = shape
    return view


def by_group(array, axis, groups):
    """A view of `array` with `axis` split into `groups` equal blocks, the group index first.

    np.matmul over such views runs every group's product in one call, with no Python loop.
    """
    shape = array.shape
    split = _view(array, shape[:axis] + (groups, shape[axis] // groups) + shape[axis + 1:])
    return np.moveaxis(split, axis, 0)


class _Plan:
    """Buffers and views for one input shape, reused while the shape stays the same."""

    def __init__(self, layer, shape, out_hw, implicit):
        n, c, h, w = shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = layer.kernel, layer.stride, layer.pad, layer.dilation
        oh, ow = out_hw
        self.shape, self.out_hw = shape, out_hw
        self.batch_last = ow < SHORT_ROW or implicit
        rows = c * kh * kw
        per_sample = rows * oh * ow * 4
        self.chunk = int(max(1, min(n, COLUMN_BUDGET // max(per_sample, 1))))
        self.cache_columns = self.chunk >= n
        # The padded input also covers windows that run past the bottom/right edge after padding.
        hp = max(h + 2 * ph, (oh - 1) * sh + dh * (kh - 1) + 1)
        wp = max(w + 2 * pw, (ow - 1) * sw + dw * (kw - 1) + 1)
        self.rows = rows
        self.hp, self.wp = hp, wp
        self.flat_scatter = self.batch_last and (sh, sw) == (1, 1)
        self.implicit = None  # the compiled implicit-GEMM path (_implicit.Implicit), set by the layer where it applies
        self._buffers = WorkBuffers()
        self._ones = None

    def buffer(self, name, shape):
        return self._buffers.get(name, shape)

    def ones(self, count):
        """A float32 vector of ones: sums over positions as one matrix-vector product, as Caffe sums bias gradients."""
        if self._ones is None or self._ones.shape != (count,):
            self._ones = np.ones(count, np.float32)
        return self._ones

    def padded_shape(self, m):
        c = self.shape[1]
        return (c, self.hp, self.wp, m) if self.batch_last else (c, m, self.hp, self.wp)

    def interior(self, padded, pad):
        """The view of the padded buffer that holds the input, in (N, C, H, W) axis order."""
        (ph, pw), (_, _, h, w) = pad, self.shape
        if self.batch_last:
            return padded[:, ph:ph + h, pw:pw + w, :].transpose(3, 0, 1, 2)
        return padded[:, :, ph:ph + h, pw:pw + w].transpose(1, 0, 2, 3)

    def window(self, padded, layer, i, j):
        """The (C, positions...) view that kernel offset (i, j) reads from the padded buffer."""
        (oh, ow), (sh, sw), (dh, dw) = self.out_hw, layer.stride, layer.dilation
        rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
        cols = slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)
        if self.batch_last:
            return padded[:, rows, cols, :]
        return padded[:, :, rows, cols]

    def windows(self, padded, layer):
        """All kernel offsets at once: a read-only (C, kh, kw, positions...) strided view."""
        (kh, kw), (sh, sw), (dh, dw) = layer.kernel, layer.stride, layer.dilation
        oh, ow = self.out_hw
        if self.batch_last:
            sc, sy, sx, sn = padded.strides
            shape = (padded.shape[0], kh, kw, oh, ow, padded.shape[3])
            strides = (sc, sy * dh, sx * dw, sy * sh, sx * sw, sn)
        else:
            sc, sn, sy, sx = padded.strides
            shape = (padded.shape[0], kh, kw, padded.shape[1], oh, ow)
            strides = (sc, sy * dh, sx * dw, sn, sy * sh, sx * sw)
        return as_strided(padded, shape, strides, writeable=False)

    def to_positions(self, array):
        """(N, O, oh, ow) -> the (O, positions...) axis order of the columns, as a view."""
        return array.transpose(1, 2, 3, 0) if self.batch_last else array.transpose(1, 0, 2, 3)

    def per_sample(self, columns, m):
        """(rows, N * oh * ow) columns of the batch-second layout as an (N, rows, oh * ow) view."""
        oh, ow = self.out_hw
        return columns.reshape(self.rows, m, oh * ow).transpose(1, 0, 2)

    def from_positions(self, array, m):
        """(O, positions) -> (N, O, oh, ow) view."""
        oh, ow = self.out_hw
        if self.batch_last:
            return array.reshape(-1, oh, ow, m).transpose(3, 0, 1, 2)
        return array.reshape(-1, m, oh, ow).transpose(1, 0, 2, 3)


class Convolution(Layer):
    """Caffe's Convolution: weights (num_output, C/group, kh, kw), bias (num_output,).

    Several bottoms may be given (each makes the top of the same index, with the same
    weights), as in Caffe; they must all have the same shape.
    """

    type = "Convolution"
    min_bottom = 1
    min_top = 1
    batch_last = True  # on the compiled implicit-GEMM path; elsewhere it reads and writes (N, C, H, W)

    def setup(self, bottom, top):
        p = self.param.convolution_param
        self.kernel, self.stride, self.pad, self.dilation = conv_geometry(self, p)
        self.num_output = int(p.num_output)
        self.group = int(p.group)
        self.bias_term = bool(p.bias_term)
        if self.num_output <= 0:
            raise self.error("convolution_param.num_output must be positive")
        if self.group <= 0:
            raise self.error("convolution_param.group must be positive")
        self._check_bottom(bottom[0])
        channels = bottom[0].shape[1]
        if channels % self.group or self.num_output % self.group:
            raise self.error(
                f"group {self.group} must divide the input channels ({channels}) and num_output ({self.num_output})"
            )
        self.channels = channels
        kh, kw = self.kernel
        weight_shape = (self.num_output, channels // self.group, kh, kw)
        self.blobs = [self._filled(p.weight_filler, weight_shape)]
        if self.bias_term:
            self.blobs.append(self._filled(p.bias_filler, (self.num_output,)))
        self._plan = None
        self.depthwise = None
        if self.group > 1 and self.group == channels:
            self.depthwise = Depthwise(self.kernel, self.stride, self.pad, self.dilation, self.num_output // self.group)
        self.pointwise = _pointwise.applies(self)

    def _filled(self, filler, shape):
        blob = Blob(shape)
        blob.data[...] = fill(filler, shape, self.rng)
        return blob

    def _check_bottom(self, blob):
        axis = self.param.convolution_param.axis
        if len(blob.shape) != 4:
            raise self.error(
                f"takes 4-D input (N, C, H, W), got shape {list(blob.shape)}; only 2-D convolution is supported"
            )
        if axis not in (1, -3):
            raise self.error(f"convolution_param.axis must be 1 (channels) for 2-D input, got {axis}")

    def reshape(self, bottom, top):
        if len(bottom) != len(top):
            raise self.error(f"needs as many tops as bottoms, got {len(bottom)} bottom(s) and {len(top)} top(s)")
        shape = bottom[0].shape
        for blob in bottom:
            self._check_bottom(blob)
            if blob.shape != shape:
                raise self.error(f"all bottoms must have one shape, got {list(shape)} and {list(blob.shape)}")
        if shape[1] != self.channels:
            raise self.error(f"input has {shape[1]} channels, the weights expect {self.channels}")
        plan = self._plan
        if plan is None or plan.shape != shape:
            geometry = zip(shape[2:], self.kernel, self.stride, self.pad, self.dilation)
            out_hw = tuple(conv_out_size(*axis) for axis in geometry)
            implicit = min(out_hw) > 0 and _implicit.applies(self, shape, out_hw)
            plan = _Plan(self, shape, out_hw, implicit)
            plan.implicit = _implicit.Implicit(self, plan) if implicit else None
        oh, ow = plan.out_hw
        if oh <= 0 or ow <= 0:
            raise self.error(
                f"kernel {list(self.kernel)} (dilation {list(self.dilation)}) is larger than the padded input "
                f"{shape[2]}x{shape[3]} (pad {list(self.pad)})"
            )
        self._plan = plan
        for blob in top:
            blob.reshape((shape[0], self.num_output, oh, ow))

    def _chunks(self, plan):
        n = plan.shape[0]
        return [(start, min(n, start + plan.chunk)) for start in range(0, n, plan.chunk)]

    def _im2col(self, plan, x, start, stop, key):
        """Columns (C*kh*kw, positions) for samples start:stop of `x`."""
        m = stop - start
        padded = plan.buffer("padded", plan.padded_shape(m))
        np.copyto(plan.interior(padded, self.pad), x[start:stop])
        positions = m * plan.out_hw[0] * plan.out_hw[1]
        columns = plan.buffer(("columns", key if plan.cache_columns else 0), (plan.rows, positions))
        windows = plan.windows(padded, self)
        np.copyto(columns.reshape(windows.shape), windows)
        return columns

    def forward(self, bottom, top):
        plan = self._plan
        g, o = self.group, self.num_output
        weights = self.blobs[0].data.reshape(o, -1)
        oh, ow = plan.out_hw
        if self.pointwise:
            _pointwise.forward(self, bottom, top)
            return
        if self.depthwise is not None:
            bias = self.blobs[1].data if self.bias_term else None
            for index, (b, t) in enumerate(zip(bottom, top)):
                self.depthwise.forward(b.data, self.blobs[0].data, bias, t.data, index)
            return
        if plan.implicit is not None:
            for index, (b, t) in enumerate(zip(bottom, top)):
                plan.implicit.forward(self, b, t, index)
            return
        for index, (b, t) in enumerate(zip(bottom, top)):
            for start, stop in self._chunks(plan):
                columns = self._im2col(plan, b.data, start, stop, index)
                m = stop - start
                if plan.batch_last:
                    # (positions, O) is the faster orientation for OpenBLAS here, and the cheaper transpose.
                    # Bias first, while the product is contiguous; a strided add costs several times more.
                    product = plan.buffer("product", (columns.shape[1], o))
                    if g == 1:
                        np.matmul(columns.T, weights.T, out=product)
                    else:
                        np.matmul(by_group(columns, 0, g).transpose(0, 2, 1), by_group(weights, 0, g).transpose(0, 2, 1),
                                  out=by_group(product, 1, g))
                    if self.bias_term:
                        np.add(product, self.blobs[1].data, out=product)
                    np.copyto(t.data[start:stop], product.reshape(oh, ow, m, o).transpose(2, 3, 0, 1))
                    continue
                # One matmul per sample, written straight into the (N, O, oh * ow) top: no transpose.
                out = _view(t.data[start:stop], (m, o, oh * ow))
                per_sample = plan.per_sample(columns, m)
                if g == 1:
                    np.matmul(weights, per_sample, out=out)
                else:
                    np.matmul(by_group(weights, 0, g)[:, None], by_group(per_sample, 1, g), out=by_group(out, 1, g))
                if self.bias_term:
                    np.add(out, self.blobs[1].data[:, None], out=out)

    def backward(self, top, propagate_down, bottom):
        plan = self._plan
        g, o = self.group, self.num_output
        og, rg = o // g, plan.rows // g
        weights = self.blobs[0].data.reshape(o, -1)
        weight_diff = self.blobs[0].diff.reshape(o, -1)
        (kh, kw), (ph, pw) = self.kernel, self.pad
        oh, ow = plan.out_hw
        if self.pointwise:
            _pointwise.backward(self, top, propagate_down, bottom)
            return
        if self.depthwise is not None:
            for index, (t, b) in enumerate(zip(top, bottom)):
                down = propagate_down[index] if index < len(propagate_down) else False
                self.depthwise.backward(t.diff, self.blobs[0].data, self.blobs[0].diff,
                                        self.blobs[1].diff if self.bias_term else None, b.diff if down else None, index)
            return
        if plan.implicit is not None:
            for index, (t, b) in enumerate(zip(top, bottom)):
                down = propagate_down[index] if index < len(propagate_down) else False
                plan.implicit.backward(self, t, b, down, index)
            return
        for index, (t, b) in enumerate(zip(top, bottom)):
            down = propagate_down[index] if index < len(propagate_down) else False
            for start, stop in self._chunks(plan):
                m = stop - start
                if plan.cache_columns:
                    columns = plan.buffer(("columns", index), (plan.rows, m * oh * ow))
                else:
                    columns = self._im2col(plan, b.data, start, stop, index)
                if plan.batch_last:
                    grad = plan.buffer("top_grad", (o, m * oh * ow))
                    np.copyto(plan.from_positions(grad, m), t.diff[start:stop])
                    if self.bias_term:
                        self.blobs[1].diff += grad @ plan.ones(grad.shape[1])
                    # (columns @ grad.T).T is faster than grad @ columns.T for these thin shapes.
                    if g == 1:
                        weight_diff += (columns @ grad.T).T
                    else:
                        by_group(weight_diff, 0, g)[...] += np.matmul(
                            by_group(columns, 0, g), by_group(grad, 0, g).transpose(0, 2, 1)).transpose(0, 2, 1)
                else:
                    # Per-sample products summed over the batch: short, contiguous inner dimensions
                    # multiply several times faster than one product over all positions, and the
                    # top gradient is read where it lies.
                    grad = _view(t.diff[start:stop], (m, o, oh * ow))
                    if self.bias_term:
                        self.blobs[1].diff += (grad @ plan.ones(oh * ow)).sum(axis=0)
                    per_sample = plan.per_sample(columns, m)
                    if g == 1:
                        parts = plan.buffer("weight_grad_parts", (m, rg, og))
                        np.matmul(per_sample, grad.transpose(0, 2, 1), out=parts)
                        weight_diff += parts.sum(axis=0).T
                    else:
                        parts = np.matmul(by_group(per_sample, 1, g), by_group(grad, 1, g).transpose(0, 1, 3, 2))
                        by_group(weight_diff, 0, g)[...] += parts.sum(axis=1).transpose(0, 2, 1)
                if not down:
                    continue
                padded = plan.buffer("padded_grad", plan.padded_shape(m))
                padded.fill(0)
                if plan.flat_scatter:
                    self._scatter_flat(plan, weights, grad, padded, m)
                    np.copyto(b.diff[start:stop], plan.interior(padded, (ph, pw)))
                    continue
                col_grad = plan.buffer("column_grad", (plan.rows, m * oh * ow))
                if plan.batch_last:
                    np.matmul(by_group(weights, 0, g).transpose(0, 2, 1), by_group(grad, 0, g),
                              out=by_group(col_grad, 0, g))
                else:
                    col_per_sample = plan.per_sample(col_grad, m)
                    np.matmul(by_group(weights, 0, g).transpose(0, 2, 1)[:, None], by_group(grad, 1, g),
                              out=by_group(col_per_sample, 1, g))
                col_grad = col_grad.reshape(plan.windows(padded, self).shape)
                for i in range(kh):
                    for j in range(kw):
                        window = plan.window(padded, self, i, j)
                        window += col_grad[:, i, j]
                np.copyto(b.diff[start:stop], plan.interior(padded, (ph, pw)))

    def _scatter_flat(self, plan, weights, grad, padded, m):
        """col2im for stride 1 in the batch-last layout, as one contiguous add per kernel offset.

        The column gradient is written with the padded buffer's row pitch (wp * N, the columns past
        each output row left at zero), so in the flattened (C, hp * wp * N) buffer the window of
        offset (i, j) is a single run starting at (i * dh * wp + j * dw) * N. Output rows are
        multiplied one at a time so that the matmul writes straight into that layout.
        """
        (oh, ow), (kh, kw), (dh, dw) = plan.out_hw, self.kernel, self.dilation
        g, o = self.group, self.num_output
        pitch = plan.wp * m
        row = ow * m
        col_grad = plan.buffer("column_grad_rows", (plan.rows, oh, pitch))
        grad = grad.reshape(o, oh, row)
        if g == 1:
            for y in range(oh):
                np.matmul(weights.T, grad[:, y], out=col_grad[:, y, :row])
        else:
            np.matmul(by_group(weights, 0, g).transpose(0, 2, 1)[:, None], by_group(grad, 0, g).transpose(0, 2, 1, 3),
                      out=by_group(col_grad[:, :, :row], 0, g).transpose(0, 2, 1, 3))
        length = (oh - 1) * pitch + row
        flat = padded.reshape(padded.shape[0], -1)
        col_grad = col_grad.reshape(padded.shape[0], kh, kw, oh * pitch)
        for i in range(kh):
            for j in range(kw):
                start = (i * dh * plan.wp + j * dw) * m
                window = flat[:, start:start + length]
                np.add(window, col_grad[:, i, j, :length], out=window)
