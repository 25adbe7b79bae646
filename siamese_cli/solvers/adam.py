"""Adam (Kingma & Ba 2014): beta1 is `momentum`, beta2 `momentum2`, epsilon `delta`."""
import numpy as np

from .solver import Solver


class Adam(Solver):
    type = "Adam"
    history_sets = 2  # first moment, then second moment

    def compute_update(self, index, param, rate):
        beta1, beta2 = np.float32(self.param.momentum), np.float32(self.param.momentum2)
        m = self.history[index]
        v = self.history[index + len(self.net.learnable_params)]
        diff = param.blob.diff
        m *= beta1
        m += (np.float32(1) - beta1) * diff
        v *= beta2
        v += (np.float32(1) - beta2) * (diff * diff)
        t = self.iter + 1
        correction = np.float32(np.sqrt(1.0 - float(beta2) ** t) / (1.0 - float(beta1) ** t))
        diff[...] = (rate * correction) * (m / (np.sqrt(v) + np.float32(self.param.delta)))
