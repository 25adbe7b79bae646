"""Caffe's Pooling layer (MAX and AVE), vectorised over the batch, looping only over kernel offsets.

Windows are visited offset by offset in row-major order: MAX keeps the first maximum of each
window as Caffe does, and AVE adds in Caffe's order (bit-identical sums).
The argmax is kept as the window offset in a small integer array, not as an input-sized mask.
With the compiled kernels (siamese_cli.accel), MAX runs in C: 2x2 tiles in two vectorised passes,
other windows in one pass with Caffe's flat-index mask.
"""
import numpy as np

from .. import accel
from ._common import WorkBuffers
from ._geometry import pool_geometry, pool_out_size
from .base import Layer

_MAX, _AVE, _STOCHASTIC = 0, 1, 2
#: Output rows shorter than this stay on the numpy path: the compiled loops run along a row,
#: and for rows of a few values their start-up costs more than numpy's whole-array passes.
COMPILED_MIN_ROW = 8


class Pooling(Layer):
    """Caffe's Pooling; a second top (MAX only) receives the argmax as the flat index h * W + w."""

    type = "Pooling"
    num_bottom = 1
    min_top = 1
    max_top = 2
    batch_last = True  # 2x2 MAX tiles with the compiled kernels; any other pooling reads (N, C, H, W)

    def setup(self, bottom, top):
        p = self.param.pooling_param
        self.method = p.pool
        if self.method == _STOCHASTIC:
            raise self.error("STOCHASTIC pooling is not supported; use MAX or AVE")
        if len(top) == 2 and self.method != _MAX:
            raise self.error("a second top (the argmax mask) needs pool: MAX")
        self.global_pooling = p.global_pooling
        self.kernel, self.stride, self.pad = pool_geometry(self, p)
        self.ceil_mode = p.round_mode == p.CEIL
        self._shape = None
        self.kernels = accel.kernels() if self.method == _MAX else None
        self._took_batch_last = False

    def reshape(self, bottom, top):
        shape = bottom[0].shape
        if len(shape) != 4:
            raise self.error(f"takes 4-D input (N, C, H, W), got shape {list(shape)}")
        if shape == self._shape:
            for blob in top:
                blob.reshape(self.top_shape)
            return
        n, c, h, w = shape
        kernel = (h, w) if self.global_pooling else self.kernel
        (kh, kw), (sh, sw), (ph, pw) = kernel, self.stride, self.pad
        oh = pool_out_size(h, kh, sh, ph, self.ceil_mode)
        ow = pool_out_size(w, kw, sw, pw, self.ceil_mode)
        if oh <= 0 or ow <= 0:
            raise self.error(f"kernel {list(kernel)} is larger than the padded input {h}x{w} (pad {list(self.pad)})")
        self.window = kernel
        self._shape = shape
        self._batch_last_buffers = WorkBuffers()
        self.top_shape = (n, c, oh, ow)
        # Non-overlapping windows that tile the input exactly: plain reshapes, no padded copy.
        self.tiled = ((ph, pw) == (0, 0) and h == oh * kh and w == ow * kw
                      and (sh == kh or oh == 1) and (sw == kw or ow == 1))
        self.padded_shape = (n, c, max(h + 2 * ph, (oh - 1) * sh + kh), max(w + 2 * pw, (ow - 1) * sw + kw))
        self._padded = None
        self._grad = None
        self.pairwise = self.method == _MAX and self.tiled and (kh, kw) == (2, 2)
        # Compiled: "tiles" (2x2 tiles; argmax = window offset, as the numpy path keeps it) or "windows"
        # (any MAX geometry; Caffe's flat-index mask).
        self.compiled = None
        if self.kernels is not None and (self.pairwise or ow >= COMPILED_MIN_ROW):
            self.compiled = "tiles" if self.pairwise else "windows"
            self.argmax = np.zeros(self.top_shape, np.int32)
            for blob in top:
                blob.reshape(self.top_shape)
            return
        if self.pairwise:
            self._even = np.empty((n, c, h, ow), np.float32)
            self._odd = np.empty((n, c, h, ow), np.float32)
            self._upper_rows = np.empty(self.top_shape, np.float32)
            self._lower_rows = np.empty(self.top_shape, np.float32)
            self._right = np.empty((n, c, h, ow), bool)
            self._lower = np.empty(self.top_shape, bool)
        self.argmax = np.zeros(self.top_shape, np.uint8 if kh * kw <= 256 else np.int32)
        self._better = np.zeros(self.top_shape, bool)
        self._differs = np.zeros(self.top_shape, bool)
        if self.method == _AVE and not self.tiled:
            self.divisor = np.multiply.outer(self._clipped_sizes(h, oh, kh, sh, ph),
                                             self._clipped_sizes(w, ow, kw, sw, pw)).astype(np.float32)
        for blob in top:
            blob.reshape(self.top_shape)

    @staticmethod
    def _clipped_sizes(size, out, kernel, stride, pad):
        """Caffe's AVE divisor along one axis: the window clipped to size + pad (padding counts)."""
        start = np.arange(out) * stride - pad
        return np.minimum(start + kernel, size + pad) - start

    def _offsets(self):
        kh, kw = self.window
        return [(i, j) for i in range(kh) for j in range(kw)]

    def _views(self, array):
        """For each kernel offset, the (N, C, oh, ow) view of `array` it reads."""
        (sh, sw), (_, _, oh, ow) = self.stride, self.top_shape
        if self.tiled:
            n, c = self.top_shape[:2]
            kh, kw = self.window
            tiles = array.reshape(n, c, oh, kh, ow, kw)
            return [tiles[:, :, :, i, :, j] for i, j in self._offsets()]
        return [array[:, :, i:i + (oh - 1) * sh + 1:sh, j:j + (ow - 1) * sw + 1:sw] for i, j in self._offsets()]

    def _padded_input(self, x, fill):
        if self.tiled:
            return x
        if self._padded is None or self._padded_fill != fill:
            self._padded = np.full(self.padded_shape, fill, np.float32)
            self._padded_fill = fill
        (ph, pw), (h, w) = self.pad, x.shape[2:]
        self._padded[:, :, ph:ph + h, pw:pw + w] = x
        return self._padded

    def _geometry_args(self):
        n, c, h, w = self._shape
        _, _, oh, ow = self.top_shape
        return (n * c, h, w, oh, ow) + tuple(self.window) + tuple(self.stride) + tuple(self.pad)

    def _forward_compiled(self, x, top):
        k, out = self.kernels, top[0].data
        if self.compiled == "tiles":
            n, c, oh, _ = self.top_shape
            k.max_pool_2x2_forward(k.ptr(x), k.ptr(out), k.ptr(self.argmax, accel.INT32), n * c * oh, x.shape[3])
            if len(top) > 1:
                self._write_mask(top[1].data, x.shape[2:])
            return
        k.max_pool_forward(k.ptr(x), k.ptr(out), k.ptr(self.argmax, accel.INT32), *self._geometry_args())
        if len(top) > 1:
            np.copyto(top[1].data, self.argmax, casting="unsafe")

    def forward(self, bottom, top):
        source = bottom[0].batch_last_data()
        self._took_batch_last = source is not None and self.compiled == "tiles" and len(top) == 1
        if self._took_batch_last:
            self._forward_batch_last(source, top[0])
            return
        x, out = bottom[0].data, top[0].data
        if self.compiled:
            self._forward_compiled(np.ascontiguousarray(x), top)
            return
        if self.pairwise:
            self._forward_pairwise(x, out)
            if len(top) > 1:
                self._pairwise_argmax()
                self._write_mask(top[1].data, x.shape[2:])
        elif self.method == _MAX:
            views = self._views(self._padded_input(x, -np.inf))
            np.copyto(out, views[0])
            for view in views[1:]:
                np.maximum(out, view, out=out)
            self._first_max(views, out)
            if len(top) > 1:
                self._write_mask(top[1].data, x.shape[2:])
        else:
            views = self._views(self._padded_input(x, 0.0))
            np.copyto(out, views[0])
            for view in views[1:]:
                out += view
            if self.tiled:
                out /= np.float32(self.window[0] * self.window[1])
            else:
                out /= self.divisor

    def _forward_batch_last(self, x, top):
        """2x2 tiles of a (C, H, W, N) bottom handed over by the compiled convolution; the top stays batch-last
        where the net allows it (the next convolution reads it as its input as it is)."""
        k, (n, c, oh, ow) = self.kernels, self.top_shape
        out = self._batch_last_buffers.get("top", (c, oh, ow, n))
        argmax = self._batch_last_buffers.get("argmax", (c, oh, ow, n), np.int32)
        k.max_pool_2x2_batch_last_forward(k.ptr(x), k.ptr(out), k.ptr(argmax, accel.INT32), c * oh, ow, n)
        if top.may_defer:
            top.defer_data(out)
        else:
            np.copyto(top.data, out.transpose(3, 0, 1, 2))

    def _backward_batch_last(self, top, bottom):
        k, (n, c, oh, ow) = self.kernels, self.top_shape
        grad = top.batch_last_diff()
        if grad is None:
            grad = self._batch_last_buffers.get("top_grad", (c, oh, ow, n))
            np.copyto(grad, top.diff.transpose(1, 2, 3, 0))
        dx = self._batch_last_buffers.get("bottom_grad", (c, 2 * oh, 2 * ow, n))
        argmax = self._batch_last_buffers.get("argmax", (c, oh, ow, n), np.int32)  # forward's
        k.max_pool_2x2_batch_last_backward(k.ptr(grad), k.ptr(argmax, accel.INT32), k.ptr(dx), c * oh, ow, n)
        if bottom.may_defer:
            bottom.defer_diff(dx)
        else:
            np.copyto(bottom.diff, dx.transpose(3, 0, 1, 2))

    def _forward_pairwise(self, x, out):
        """2x2 tiles: the max of each horizontal pair, then of the two rows; two bits locate the first maximum.

        `_right` (per tile row) is set where the right element is strictly greater, `_lower` where
        the lower row's maximum is: ties keep the earlier element, as Caffe does. Viewing float
        pairs as complex64 splits even and odd columns with two fast strided copies, so every
        comparison then runs on contiguous arrays.
        """
        n, c, oh, ow = self.top_shape
        even, odd, upper, lower = self._even, self._odd, self._upper_rows, self._lower_rows
        pairs = np.ascontiguousarray(x).view(np.complex64)
        np.copyto(even, pairs.real)
        np.copyto(odd, pairs.imag)
        np.greater(odd, even, out=self._right)
        np.maximum(even, odd, out=even)
        rows = even.reshape(n, c, oh, 2, ow)
        np.copyto(upper, rows[:, :, :, 0])
        np.copyto(lower, rows[:, :, :, 1])
        np.maximum(upper, lower, out=out)
        np.greater(lower, upper, out=self._lower)

    def _pairwise_argmax(self):
        """The window offset (0..3, row-major) of each first maximum, from the two bits."""
        n, c, oh, ow = self.top_shape
        right = self._right.reshape(n, c, oh, 2, ow)
        np.copyto(self.argmax, np.where(self._lower, right[:, :, :, 1], right[:, :, :, 0]))
        self.argmax += self._lower.view(np.uint8) << 1

    def _backward_pairwise(self, dy, dx):
        """Route dy to the first maximum of each 2x2 tile: split by row, then by column (zeros elsewhere)."""
        n, c, oh, ow = self.top_shape
        rows, odd, upper, lower = self._even, self._odd, self._upper_rows, self._lower_rows
        np.multiply(dy, self._lower, out=lower)
        np.subtract(dy, lower, out=upper)
        tiles = rows.reshape(n, c, oh, 2, ow)
        np.copyto(tiles[:, :, :, 0], upper)
        np.copyto(tiles[:, :, :, 1], lower)
        np.multiply(rows, self._right, out=odd)
        np.subtract(rows, odd, out=rows)
        pairs = (dx if dx.flags.c_contiguous else np.empty(dx.shape, np.float32)).view(np.complex64)
        np.copyto(pairs.real, rows)
        np.copyto(pairs.imag, odd)
        if not dx.flags.c_contiguous:
            np.copyto(dx, pairs.view(np.float32))

    def _first_max(self, views, out):
        """argmax = the number of leading offsets that do not hold the maximum (so the first one wins).

        Counting with boolean arithmetic is several times faster than masked copies.
        """
        argmax, searching, differs = self.argmax, self._better, self._differs
        argmax.fill(0)
        if len(views) == 1:
            return
        np.not_equal(views[0], out, out=searching)
        np.add(argmax, searching, out=argmax)
        for view in views[1:-1]:
            np.not_equal(view, out, out=differs)
            np.logical_and(searching, differs, out=searching)
            np.add(argmax, searching, out=argmax)

    def _write_mask(self, mask, size):
        """The argmax as Caffe's flat input index h * W + w (in float)."""
        (sh, sw), (ph, pw), (_, kw) = self.stride, self.pad, self.window
        _, _, oh, ow = self.top_shape
        rows = (np.arange(oh) * sh - ph)[:, None] + self.argmax // kw
        cols = (np.arange(ow) * sw - pw)[None, :] + self.argmax % kw
        np.copyto(mask, rows * size[1] + cols, casting="unsafe")

    def backward(self, top, propagate_down, bottom):
        if not propagate_down[0]:
            return
        if self._took_batch_last:
            self._backward_batch_last(top[0], bottom[0])
            return
        dy, dx = top[0].diff, bottom[0].diff
        if self.compiled:
            k, target = self.kernels, dx if dx.flags.c_contiguous else np.empty(dx.shape, np.float32)
            grad, argmax = k.ptr(np.ascontiguousarray(dy)), k.ptr(self.argmax, accel.INT32)
            if self.compiled == "tiles":
                n, c, oh, _ = self.top_shape
                k.max_pool_2x2_backward(grad, argmax, k.ptr(target), n * c * oh, dx.shape[3])
            else:
                k.max_pool_backward(grad, argmax, k.ptr(target), *self._geometry_args()[:5])
            if target is not dx:
                np.copyto(dx, target)
            return
        if self.pairwise:
            self._backward_pairwise(dy, dx)
            return
        if self.tiled:
            grad = dx
        else:
            if self._grad is None:
                self._grad = np.zeros(self.padded_shape, np.float32)
                self._routed = np.zeros(self.top_shape, np.float32)
            grad = self._grad
            grad.fill(0)
        views = self._views(grad)
        if self.method == _MAX:
            for offset in reversed(range(len(views))):
                np.equal(self.argmax, offset, out=self._better)
                if self.tiled:
                    np.multiply(dy, self._better, out=views[offset])
                else:
                    views[offset] += np.multiply(dy, self._better, out=self._routed)
        else:
            share = dy / (np.float32(self.window[0] * self.window[1]) if self.tiled else self.divisor)
            for view in reversed(views):
                if self.tiled:
                    np.copyto(view, share)
                else:
                    view += share
        if not self.tiled:
            (ph, pw), (h, w) = self.pad, dx.shape[2:]
            np.copyto(dx, grad[:, :, ph:ph + h, pw:pw + w])
