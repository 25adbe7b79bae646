"""RMSProp: rates scaled by a running mean of squared gradients (decay rms_decay)."""
import numpy as np

from .checks import check_momentum_unused, check_rms_decay
from .solver import Solver


class RMSProp(Solver):
    type = "RMSProp"

    def check_param(self):
        check_momentum_unused(self)
        check_rms_decay(self)

    def compute_update(self, index, param, rate):
        decay = np.float32(self.param.rms_decay)
        diff = param.blob.diff
        history = self.history[index]
        history *= decay
        history += (np.float32(1) - decay) * (diff * diff)
        diff[...] = rate * (diff / (np.sqrt(history) + np.float32(self.param.delta)))
