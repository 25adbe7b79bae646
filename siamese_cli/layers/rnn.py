"""RNN: Caffe's plain recurrent layer (see recurrent.py for the bottoms, tops and state).

h_t = tanh(W_xh x_t + b_h [+ W_xh_static x_static] + W_hh (cont_t h_{t-1})),  o_t = tanh(W_ho h_t + b_o).
Blobs in Caffe's order: W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o (all H wide).
"""
import numpy as np

from .recurrent import Recurrent


class RNN(Recurrent):
    type = "RNN"
    states = ("h_0",)
    gates = 1

    def recurrent_blobs(self):
        h = self.hidden
        return [self._weights((h, h)), self._weights((h, h)), self._bias(h)]

    def _recurrent(self):
        first = 3 if self.static else 2
        return self.blobs[first:first + 3]  # W_hh, W_ho, b_o

    def run(self, inputs, cont, initial, out):
        w_hh, w_ho, b_o = (blob.data for blob in self._recurrent())
        steps = inputs.shape[0]
        self.cont = cont
        self.conted = np.empty_like(inputs)  # cont_t h_{t-1}, the recurrent weights' input
        self.h = np.empty_like(inputs)
        h = initial[0]
        for t in range(steps):
            self.conted[t] = cont[t] * h
            h = np.tanh(inputs[t] + self.conted[t] @ w_hh.T)
            self.h[t] = h
        np.tanh(self.h @ w_ho.T + b_o, out=out)
        self.out = out.copy()
        return [h]

    def run_backward(self, d_out, d_final):
        w_hh_blob, w_ho_blob, b_o_blob = self._recurrent()
        hidden = self.hidden
        d_pre_o = d_out * (np.float32(1) - self.out * self.out)
        w_ho_blob.diff += d_pre_o.reshape(-1, hidden).T @ self.h.reshape(-1, hidden)
        b_o_blob.diff += d_pre_o.sum(axis=(0, 1), dtype=np.float32)
        d_h_from_out = d_pre_o @ w_ho_blob.data
        d_inputs = np.empty_like(d_out)
        d_next = d_final[0]
        for t in reversed(range(d_out.shape[0])):
            d_pre = (d_h_from_out[t] + d_next) * (np.float32(1) - self.h[t] * self.h[t])
            d_inputs[t] = d_pre
            w_hh_blob.diff += d_pre.T @ self.conted[t]
            d_next = self.cont[t] * (d_pre @ w_hh_blob.data)
        return d_inputs, [d_next]
