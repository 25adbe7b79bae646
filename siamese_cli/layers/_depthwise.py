"""Depthwise convolution (one input channel per group), one array operation per kernel offset.

With group == channels there is nothing to multiply as a matrix: output channel o reads only
input channel o // m (m = num_output / group; for m > 1 the input channels are repeated m times
first). Each kernel offset (i, j) is a strided view of the padded input, scaled by that offset's
per-channel weights and added up: a 3 x 3 layer of any number of channels is nine multiply-adds
over whole arrays. Small images (7 x 7 with 1024 channels) are laid out channels-last, (H, W, N, C),
so that every operation runs along long contiguous channel rows rather than rows of 7 pixels.

The forward blocks are independent (each writes its own rows of the result), so they are shared
out over `threads` threads: numpy's element-wise loops release the GIL, and unlike a matmul nothing
else would put the second core to work. The sums are the same whichever thread runs a block.

With the compiled kernels (siamese_cli.accel, accel/depthwise.c) forward and backward are one pass
over memory each, the input channels shared out over the threads (ctypes releases the GIL): the
top is bit for bit the numpy path's, and each channel's gradient is summed by one thread, so no
result depends on the thread count.
"""
import contextvars
import threading

import numpy as np

from .. import accel
from ..schedule import requested_lanes
from ._common import WorkBuffers

#: Output rows shorter than this use the channels-last layout.
SHORT_ROW = 16
#: Forward works through the output in blocks of about this many bytes, so that the nine
#: multiply-adds of a block run in cache instead of streaming the whole output nine times.
BLOCK_BYTES = 256 << 10
#: The compiled path shares a layer out over the threads only from this many multiply-adds on:
#: starting a thread costs about 0.1 ms, more than a second core saves on a batch-1 MobileNet layer.
MIN_SPLIT = 1 << 22


class Depthwise:
    """Forward and backward of a depthwise Convolution of fixed geometry."""

    def __init__(self, kernel, stride, pad, dilation, multiplier, threads=None):
        self.kernel, self.stride, self.pad, self.dilation = kernel, stride, pad, dilation
        self.multiplier = multiplier
        self.threads = requested_lanes() if threads is None else threads  # SIAMESE_BRANCH_THREADS=1: one
        self._inputs = {}  # bottom index -> its padded input, kept for backward
        self._buffers = WorkBuffers()
        self.kernels = accel.kernels()
        self._bottoms = {}  # compiled path: bottom index -> the bottom itself, read again by backward as Caffe does

    def _each_block(self, starts, work):
        """work(start) for every block start, in contiguous runs of blocks, one run per thread."""
        runs = [run for run in np.array_split(np.asarray(starts), min(self.threads, len(starts))) if run.size]
        if len(runs) < 2:
            for start in starts:
                work(start)
            return
        errors = []

        def run_blocks(run):
            try:
                for start in run:
                    work(int(start))
            except BaseException as exc:  # re-raised in the calling thread
                errors.append(exc)

        helpers = [threading.Thread(target=contextvars.copy_context().run, args=(run_blocks, run)) for run in runs[1:]]
        for helper in helpers:
            helper.start()
        run_blocks(runs[0])
        for helper in helpers:
            helper.join()
        if errors:
            raise errors[0]

    def _each_channel_range(self, channels, work, size):
        """work(c0, c1) for contiguous channel ranges covering range(channels), one per thread
        (one range in all below MIN_SPLIT multiply-adds: `size` outputs times the kernel taps)."""
        parts = min(self.threads, channels) if size * self.kernel[0] * self.kernel[1] >= MIN_SPLIT else 1
        bounds = np.linspace(0, channels, parts + 1).round().astype(int).tolist()
        ends = dict(zip(bounds[:-1], bounds[1:]))
        self._each_block(list(ends), lambda start: work(start, ends[start]))

    def _geometry(self, shape, out_hw):
        n, c, h, w = shape
        return (n, c, self.multiplier, h, w, *out_hw, *self.kernel, *self.stride, *self.pad, *self.dilation)

    def _forward_compiled(self, x, weights, bias, out, key):
        k = self.kernels
        x = np.ascontiguousarray(x, np.float32)
        self._bottoms[key] = x
        arrays = (k.ptr(x), k.ptr(weights), None if bias is None else k.ptr(bias), k.ptr(out))
        geometry = self._geometry(x.shape, out.shape[2:])
        self._each_channel_range(x.shape[1], lambda c0, c1: k.depthwise_forward(*arrays, *geometry, c0, c1), out.size)

    def _backward_compiled(self, dy, weights, weight_diff, bias_diff, dx, key):
        k, x = self.kernels, self._bottoms[key]
        dy = np.ascontiguousarray(dy, np.float32)
        arrays = (k.ptr(x), k.ptr(dy), k.ptr(weights), k.ptr(weight_diff),
                  None if bias_diff is None else k.ptr(bias_diff), None if dx is None else k.ptr(dx))
        geometry = self._geometry(x.shape, dy.shape[2:])
        taps = self.kernel[0] * self.kernel[1]

        def channels(c0, c1):  # each thread its own work memory
            acc = np.empty(self.multiplier * (taps + 1) * dy.shape[3], np.float64)
            spare = np.empty(x.shape[3], np.float32)
            k.depthwise_backward(*arrays, k.ptr(acc, accel.FLOAT64), k.ptr(spare), *geometry, c0, c1)

        self._each_channel_range(x.shape[1], channels, dy.size)

    def _spatial(self, i, j, out_hw):
        """Row and column slices that kernel offset (i, j) reads from the padded input."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        oh, ow = out_hw
        return (slice(i * dh, i * dh + (oh - 1) * sh + 1, sh), slice(j * dw, j * dw + (ow - 1) * sw + 1, sw))

    def _layout(self, shape, out_hw):
        """(channels_last, padded shape) for an (N, O, H, W) input."""
        n, o, h, w = shape
        (kh, kw), (sh, sw), (ph, pw), (dh, dw) = self.kernel, self.stride, self.pad, self.dilation
        oh, ow = out_hw
        hp = max(h + 2 * ph, (oh - 1) * sh + dh * (kh - 1) + 1)
        wp = max(w + 2 * pw, (ow - 1) * sw + dw * (kw - 1) + 1)
        last = ow < SHORT_ROW
        return last, ((hp, wp, n, o) if last else (n, o, hp, wp))

    def _window(self, array, last, rows, cols):
        return array[rows, cols] if last else array[:, :, rows, cols]

    def _interior(self, padded, last, hw):
        (ph, pw), (h, w) = self.pad, hw
        if last:
            return padded[ph:ph + h, pw:pw + w].transpose(2, 3, 0, 1)
        return padded[:, :, ph:ph + h, pw:pw + w]

    def _taps(self, weights, last, i, j):
        tap = weights[:, 0, i, j]
        return tap if last else tap[None, :, None, None]

    def forward(self, x, weights, bias, out, key=0):
        """out (N, O, oh, ow) = depthwise convolution of x (N, C, H, W) with weights (O, 1, kh, kw)."""
        if self.kernels is not None:
            self._forward_compiled(x, weights, bias, out, key)
            return
        if self.multiplier > 1:
            x = np.repeat(x, self.multiplier, axis=1)
        out_hw = out.shape[2:]
        last, shape = self._layout(x.shape, out_hw)
        padded = self._buffers.get(("padded", key), shape)  # the border stays zero: only the interior is written
        np.copyto(self._interior(padded, last, x.shape[2:]), x)
        self._inputs[key] = (padded, last, x.shape[2:])
        if not last:
            self._forward_flat(padded, weights, bias, out)
            return
        oh, ow = out_hw
        total = self._buffers.get("total", (oh, ow) + shape[2:] if last else out.shape)
        scratch = self._buffers.get("scratch", total.shape)
        per_row = total[:1].nbytes if last else total[:, :, :1].nbytes
        step = max(1, BLOCK_BYTES // max(per_row, 1))
        (sh, _), (dh, _) = self.stride, self.dilation

        def rows_block(y0):
            y1 = min(oh, y0 + step)
            block = total[y0:y1] if last else total[:, :, y0:y1]
            spare = scratch[y0:y1] if last else scratch[:, :, y0:y1]
            for i in range(self.kernel[0]):
                rows = slice(i * dh + y0 * sh, i * dh + (y1 - 1) * sh + 1, sh)
                for j in range(self.kernel[1]):
                    window = self._window(padded, last, rows, self._spatial(i, j, out_hw)[1])
                    if (i, j) == (0, 0):
                        np.multiply(window, self._taps(weights, last, i, j), out=block)
                    else:
                        np.multiply(window, self._taps(weights, last, i, j), out=spare)
                        block += spare

        self._each_block(range(0, oh, step), rows_block)
        if bias is not None:
            total += bias if last else bias[None, :, None, None]
        np.copyto(out, total.transpose(2, 3, 0, 1) if last else total)

    def _flat_runs(self, padded, out_hw):
        """Stride 1: in the (N * C, hp * wp) flattening, offset (i, j) reads one run per row.

        Outputs are computed at the padded row pitch wp (the columns past ow are discarded),
        so the run of offset (i, j) starts at i * dh * wp + j * dw and is (oh - 1) * wp + ow long.
        """
        (kh, kw), (dh, dw) = self.kernel, self.dilation
        hp, wp = padded.shape[2:]
        length = (out_hw[0] - 1) * wp + out_hw[1]
        return [(i, j, i * dh * wp + j * dw) for i in range(kh) for j in range(kw)], length, wp

    def _flat_taps(self, weights, n, i, j):
        return np.tile(weights[:, 0, i, j], n)[:, None]

    def _phases(self, padded):
        """Strided layers: the padded input split into its stride phases, (sh * sw, N * C, ph * pw).

        Phase (a, b) holds padded[a::sh, b::sw]; kernel offset (i, j) then reads phase
        (i dh % sh, j dw % sw) with stride 1, starting at (i dh // sh, j dw // sw): a contiguous run.
        """
        (sh, sw), (dh, dw) = self.stride, self.dilation
        n, c, hp, wp = padded.shape
        ph, pw = -(-hp // sh), -(-wp // sw)
        phases = self._buffers.get("phases", (sh * sw, n * c, ph * pw))
        grid = phases.reshape(sh, sw, n, c, ph, pw)
        for a in range(sh):
            for b in range(sw):
                part = padded[:, :, a::sh, b::sw]
                grid[a, b, :, :, :part.shape[2], :part.shape[3]] = part
        runs = [((i * dh % sh) * sw + j * dw % sw, (i * dh // sh) * pw + j * dw // sw)
                for i in range(self.kernel[0]) for j in range(self.kernel[1])]
        return phases, runs, pw

    def _forward_flat(self, padded, weights, bias, out):
        n, c = padded.shape[:2]
        oh, ow = out.shape[2:]
        if self.stride == (1, 1):
            runs, length, wp = self._flat_runs(padded, (oh, ow))
            flat = padded.reshape(1, n * c, -1)
            runs = [(0, start) for _, _, start in runs]
        else:
            flat, runs, wp = self._phases(padded)
            length = (oh - 1) * wp + ow
        total = self._buffers.get("total", (n * c, oh * wp))
        scratch = self._buffers.get("scratch", (n * c, length))
        taps = np.tile(weights.reshape(c, -1), (n, 1))  # (N * C, kh * kw)
        step = max(1, BLOCK_BYTES // (length * 4))

        def channels_block(r0):
            r1 = min(n * c, r0 + step)
            head, spare = total[r0:r1, :length], scratch[r0:r1]
            for k, (phase, start) in enumerate(runs):
                source = flat[phase, r0:r1, start:start + length]
                np.multiply(source, taps[r0:r1, k:k + 1], out=spare if k else head)
                if k:
                    head += spare

        self._each_block(range(0, n * c, step), channels_block)
        result = total.reshape(n, c, oh, wp)[:, :, :, :ow]
        if bias is not None:
            np.add(result, bias[None, :, None, None], out=out)
        else:
            np.copyto(out, result)

    def _backward_flat(self, padded, grad, weights, weight_diff, padded_grad):
        n, c = padded.shape[:2]
        oh, ow = grad.shape[2:]
        runs, length, wp = self._flat_runs(padded, (oh, ow))
        flat = padded.reshape(n * c, -1)
        pitched = np.zeros((n, c, oh, wp), np.float32)
        pitched[:, :, :, :ow] = grad
        head = pitched.reshape(n * c, -1)[:, :length]
        scratch = np.empty((n * c, length), np.float32)
        target = None if padded_grad is None else padded_grad.reshape(n * c, -1)
        for i, j, start in runs:
            np.multiply(flat[:, start:start + length], head, out=scratch)
            weight_diff[:, 0, i, j] += scratch.sum(axis=1, dtype=np.float32).reshape(n, c).sum(axis=0)
            if target is not None:
                np.multiply(head, self._flat_taps(weights, n, i, j), out=scratch)
                target[:, start:start + length] += scratch

    def backward(self, dy, weights, weight_diff, bias_diff, dx, key=0):
        """Add the weight (and bias) gradients; write the bottom gradient into dx unless it is None."""
        if self.kernels is not None:
            self._backward_compiled(dy, weights, weight_diff, bias_diff, dx, key)
            return
        padded, last, hw = self._inputs[key]
        if bias_diff is not None:
            bias_diff += dy.sum(axis=(0, 2, 3), dtype=np.float32)
        padded_grad = None if dx is None else np.zeros(padded.shape, np.float32)
        if not last and self.stride == (1, 1):
            self._backward_flat(padded, dy, weights, weight_diff, padded_grad)
        else:
            self._backward_offsets(padded, last, dy, weights, weight_diff, padded_grad)
        if dx is None:
            return
        full = self._interior(padded_grad, last, hw)
        if self.multiplier > 1:
            n, o = full.shape[:2]
            full = full.reshape(n, o // self.multiplier, self.multiplier, *full.shape[2:]).sum(axis=2)
        np.copyto(dx, full)

    def _backward_offsets(self, padded, last, dy, weights, weight_diff, padded_grad):
        out_hw = dy.shape[2:]
        grad = np.ascontiguousarray(dy.transpose(2, 3, 0, 1)) if last else dy
        sum_axes = (0, 1, 2) if last else (0, 2, 3)
        scratch = np.empty(grad.shape, np.float32)
        for i in range(self.kernel[0]):
            for j in range(self.kernel[1]):
                rows, cols = self._spatial(i, j, out_hw)
                np.multiply(self._window(padded, last, rows, cols), grad, out=scratch)
                weight_diff[:, 0, i, j] += scratch.sum(axis=sum_axes, dtype=np.float32)
                if padded_grad is not None:
                    np.multiply(grad, self._taps(weights, last, i, j), out=scratch)
                    self._window(padded_grad, last, rows, cols)[...] += scratch
