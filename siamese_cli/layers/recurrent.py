"""The Recurrent family's common part (Caffe's RecurrentLayer), for RNN and LSTM.

Bottoms: x (T x N x ...), cont (T x N; 0 where a sequence starts, cutting the state carried in),
an optional static input x_static (N x ...) added to every time step, and with
expose_hidden the initial states (1 x N x num_output each). Tops: the T x N x num_output
outputs, and with expose_hidden the final states.

Caffe unrolls the recurrence into an internal net; here it runs directly, with the same
learnable blobs in the same order and shapes, so .caffemodel files load: the input
transform W_x (G*H x D), its bias (G*H), W_x_static (G*H x D_static) when there is a static
input, then the subclass's recurrent blobs. Without expose_hidden, each forward starts from
the final state of the previous one (zero at first), as Caffe does; no gradient crosses
from one forward to the next. cont takes no gradient. With expose_hidden the gradient flows
back from the final-state tops and into the initial-state bottoms, which Caffe 1.0 omits
(it shares their data only), so nets whose loss depends on those blobs train here with
the full gradient.
"""
import numpy as np

from ..blob import Blob
from ..fillers import fill
from ._common import count
from .base import Layer


class Recurrent(Layer):
    min_bottom = 2
    max_bottom = 5
    min_top = 1
    max_top = 3
    states = ()  # names of the recurrent states, in Caffe's bottom/top order
    gates = 1  # the input transform's width in units of num_output

    def setup(self, bottom, top):
        p = self.param.recurrent_param
        self.hidden = int(p.num_output)
        if self.hidden <= 0:
            raise self.error("recurrent_param.num_output must be positive")
        x, cont = bottom[0].shape, bottom[1].shape
        if len(x) < 2:
            raise self.error(f"x (bottom 0) must be T x N x ..., got shape {list(x)}")
        self.steps = x[0]
        self.exposed = len(self.states) if p.expose_hidden else 0
        self.static = len(bottom) > 2 + self.exposed
        expected = 2 + self.static + self.exposed
        if len(bottom) != expected or len(top) != 1 + self.exposed:
            names = ", ".join(self.states)
            raise self.error(f"takes bottoms x, cont[, x_static]{', ' + names if self.exposed else ''} and "
                             f"{1 + self.exposed} top(s); got {len(bottom)} bottoms and {len(top)} tops "
                             f"(expose_hidden: {bool(p.expose_hidden)})")
        self._check_cont(x, cont)
        width = self.gates * self.hidden
        self.input_dim = count(x, 2)
        self.blobs = [self._weights((width, self.input_dim)), self._bias(width)]
        if self.static:
            shape = bottom[2].shape
            if len(shape) < 1 or shape[0] != x[1]:
                raise self.error(f"x_static (bottom 2) must be N x ... with N = {x[1]}, got shape {list(shape)}")
            self.blobs.append(self._weights((width, count(shape, 1))))
        self.blobs.extend(self.recurrent_blobs())
        self.carried = None

    def _weights(self, shape):
        blob = Blob(shape)
        blob.data[...] = fill(self.param.recurrent_param.weight_filler, shape, self.rng)
        return blob

    def _bias(self, size):
        blob = Blob((size,))
        blob.data[...] = fill(self.param.recurrent_param.bias_filler, (size,), self.rng)
        return blob

    def recurrent_blobs(self):
        raise NotImplementedError

    def _check_cont(self, x, cont):
        if len(cont) != 2 or tuple(cont) != tuple(x[:2]):
            raise self.error(f"cont (bottom 1) must be T x N = {list(x[:2])}, got shape {list(cont)}")

    def allow_backward(self, index):
        return index != 1

    def reshape(self, bottom, top):
        x = bottom[0].shape
        if len(x) < 2 or x[0] != self.steps:
            raise self.error(f"x must keep its {self.steps} time steps, got shape {list(x)}")
        if count(x, 2) != self.input_dim:
            raise self.error(f"x has {count(x, 2)} values per step and stream; the weights expect {self.input_dim}")
        self._check_cont(x, bottom[1].shape)
        self.streams = x[1]
        state_shape = (1, self.streams, self.hidden)
        for k, blob in enumerate(bottom[2 + self.static:]):
            if blob.shape != state_shape:
                raise self.error(f"{self.states[k]} must be {list(state_shape)}, got {list(blob.shape)}")
        top[0].reshape((self.steps, self.streams, self.hidden))
        for blob in top[1:]:
            blob.reshape(state_shape)

    def forward(self, bottom, top):
        steps, streams, width = self.steps, self.streams, self.gates * self.hidden
        x = bottom[0].data.reshape(steps * streams, self.input_dim)
        inputs = (x @ self.blobs[0].data.T + self.blobs[1].data).reshape(steps, streams, width)
        if self.static:
            inputs += (bottom[2].data.reshape(streams, -1) @ self.blobs[2].data.T)[None]
        if self.exposed:
            initial = [blob.data.reshape(streams, self.hidden) for blob in bottom[2 + self.static:]]
        elif self.carried is not None and self.carried[0].shape == (streams, self.hidden):
            initial = self.carried
        else:
            initial = [np.zeros((streams, self.hidden), np.float32) for _ in self.states]
        cont = bottom[1].data.reshape(steps, streams, 1)
        final = self.run(inputs, cont, initial, top[0].data)
        if self.exposed:
            for blob, state in zip(top[1:], final):
                blob.data[...] = state.reshape(blob.shape)
        else:
            self.carried = [state.copy() for state in final]

    def backward(self, top, propagate_down, bottom):
        steps, streams, width = self.steps, self.streams, self.gates * self.hidden
        state_shape = (streams, self.hidden)
        if self.exposed:
            d_final = [blob.diff.reshape(state_shape) for blob in top[1:]]
        else:
            d_final = [np.zeros(state_shape, np.float32) for _ in self.states]
        d_inputs, d_initial = self.run_backward(top[0].diff.reshape(steps, streams, self.hidden), d_final)
        for k, blob in enumerate(bottom[2 + self.static:]):
            if propagate_down[2 + self.static + k]:
                blob.diff[...] = d_initial[k].reshape(blob.shape)
        flat = d_inputs.reshape(steps * streams, width)
        x = bottom[0].data.reshape(steps * streams, self.input_dim)
        self.blobs[0].diff += flat.T @ x
        self.blobs[1].diff += flat.sum(axis=0, dtype=np.float32)
        if self.static:
            per_stream = d_inputs.sum(axis=0, dtype=np.float32)
            x_static = bottom[2].data.reshape(streams, -1)
            self.blobs[2].diff += per_stream.T @ x_static
            if propagate_down[2]:
                bottom[2].diff[...] = (per_stream @ self.blobs[2].data).reshape(bottom[2].shape)
        if propagate_down[0]:
            bottom[0].diff[...] = (flat @ self.blobs[0].data).reshape(bottom[0].shape)

    def run(self, inputs, cont, initial, out):
        """Step through time: write the T x N x H outputs into `out`, return the final states."""
        raise NotImplementedError

    def run_backward(self, d_out, d_final):
        """Backpropagate through time from the gradients of the outputs and of the final states; add the
        recurrent blobs' gradients; return the gradients of the transformed inputs (T x N x G*H) and of the
        initial states."""
        raise NotImplementedError
