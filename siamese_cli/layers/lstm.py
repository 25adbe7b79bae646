"""LSTM: Caffe's long short-term memory layer (see recurrent.py for the bottoms, tops and state).

The 4H gate inputs W_xc x_t + b_c [+ W_xc_static x_static] + W_hc (cont_t h_{t-1}) split into
i, f, o, g in that order: i, o = sigmoid; f = cont_t sigmoid (0 where cont_t is 0); g = tanh;
c_t = f c_{t-1} + i g,  h_t = o tanh(c_t). Blobs in Caffe's order: W_xc, b_c, [W_xc_static], W_hc.
States: h_0 and c_0 in, h_T and c_T out with expose_hidden.
"""
import numpy as np

from .recurrent import Recurrent


def _sigmoid(x):
    one = np.float32(1)
    with np.errstate(over="ignore"):
        return one / (one + np.exp(-x))


class LSTM(Recurrent):
    type = "LSTM"
    states = ("h_0", "c_0")
    gates = 4

    def recurrent_blobs(self):
        return [self._weights((4 * self.hidden, self.hidden))]

    def run(self, inputs, cont, initial, out):
        w_hc = self.blobs[-1].data
        hidden = self.hidden
        steps, streams = inputs.shape[:2]
        self.cont = cont
        self.conted = np.empty((steps, streams, hidden), np.float32)
        self.acts = np.empty_like(inputs)  # i, f (times cont), o, g after their nonlinearities
        self.c = np.empty((steps + 1, streams, hidden), np.float32)  # c[0] is the initial state
        self.tanh_c = np.empty((steps, streams, hidden), np.float32)
        h, self.c[0] = initial
        for t in range(steps):
            self.conted[t] = cont[t] * h
            gates = inputs[t] + self.conted[t] @ w_hc.T
            acts = self.acts[t]
            acts[:, :3 * hidden] = _sigmoid(gates[:, :3 * hidden])
            acts[:, 3 * hidden:] = np.tanh(gates[:, 3 * hidden:])
            acts[:, hidden:2 * hidden] *= np.where(cont[t] == 0, np.float32(0), cont[t])
            i, f, o, g = (acts[:, k * hidden:(k + 1) * hidden] for k in range(4))
            self.c[t + 1] = f * self.c[t] + i * g
            np.tanh(self.c[t + 1], out=self.tanh_c[t])
            h = o * self.tanh_c[t]
            out[t] = h
        return [h.copy(), self.c[steps].copy()]

    def run_backward(self, d_out, d_final):
        w_hc_blob = self.blobs[-1]
        hidden = self.hidden
        one = np.float32(1)
        d_inputs = np.empty_like(self.acts)
        d_h_next, d_c_next = d_final
        for t in reversed(range(d_out.shape[0])):
            i, f, o, g = (self.acts[t][:, k * hidden:(k + 1) * hidden] for k in range(4))
            tanh_c = self.tanh_c[t]
            d_h = d_out[t] + d_h_next
            d_c = d_c_next + d_h * o * (one - tanh_c * tanh_c)
            d = d_inputs[t]
            d[:, :hidden] = d_c * g * i * (one - i)
            # Caffe differentiates f = cont * sigmoid as f (1 - f): exact for cont in {0, 1}.
            d[:, hidden:2 * hidden] = d_c * self.c[t] * f * (one - f)
            d[:, 2 * hidden:3 * hidden] = d_h * tanh_c * o * (one - o)
            d[:, 3 * hidden:] = d_c * i * (one - g * g)
            w_hc_blob.diff += d.T @ self.conted[t]
            d_h_next = self.cont[t] * (d @ w_hc_blob.data)
            d_c_next = d_c * f
        return d_inputs, [d_h_next, d_c_next]
