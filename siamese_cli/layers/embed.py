"""Embed: a lookup table; each bottom value is a row index into input_dim x num_output weights.

The top has the bottom's shape plus a last axis of num_output. Indices get no gradient;
the weights (and bias) do, summed over repeated indices.
"""
import numpy as np

from ..blob import Blob
from ..fillers import fill
from .base import Layer


class Embed(Layer):
    type = "Embed"
    num_bottom = 1
    num_top = 1
    no_gradient_bottoms = (0,)

    def setup(self, bottom, top):
        p = self.param.embed_param
        self.num_output, self.input_dim = int(p.num_output), int(p.input_dim)
        if self.num_output <= 0 or self.input_dim <= 0:
            raise self.error("embed_param needs positive num_output and input_dim")
        self.bias_term = p.bias_term
        shape = (self.input_dim, self.num_output)
        self.blobs = [Blob(shape)]
        self.blobs[0].data[...] = fill(p.weight_filler, shape, self.rng)
        if self.bias_term:
            self.blobs.append(Blob((self.num_output,)))
            self.blobs[1].data[...] = fill(p.bias_filler, (self.num_output,), self.rng)

    def reshape(self, bottom, top):
        top[0].reshape(tuple(bottom[0].shape) + (self.num_output,))

    def _indices(self, bottom):
        values = bottom[0].data.ravel()
        indices = values.astype(np.int64)
        bad = (indices != values) | (indices < 0) | (indices >= self.input_dim)
        if bad.any():
            raise self.error(f"index {float(values[bad][0]):g} is not an integer in 0..{self.input_dim - 1} "
                             f"(input_dim {self.input_dim})")
        return indices

    def forward(self, bottom, top):
        self.indices = self._indices(bottom)
        rows = top[0].data.reshape(-1, self.num_output)
        np.take(self.blobs[0].data, self.indices, axis=0, out=rows)
        if self.bias_term:
            rows += self.blobs[1].data

    def backward(self, top, propagate_down, bottom):
        dy = top[0].diff.reshape(-1, self.num_output)
        np.add.at(self.blobs[0].diff, self.indices, dy)
        if self.bias_term:
            self.blobs[1].diff += dy.sum(axis=0, dtype=np.float32)
