"""AdaDelta (Zeiler 2012): running means of squared gradients and of squared steps; `momentum` is the decay."""
import numpy as np

from .solver import Solver


class AdaDelta(Solver):
    type = "AdaDelta"
    history_sets = 2  # squared gradients, then squared updates

    def compute_update(self, index, param, rate):
        decay = np.float32(self.param.momentum)
        keep = np.float32(1) - decay
        delta = np.float32(self.param.delta)
        grad_sq = self.history[index]
        step_sq = self.history[index + len(self.net.learnable_params)]
        diff = param.blob.diff
        grad_sq *= decay
        grad_sq += keep * (diff * diff)
        diff *= np.sqrt((step_sq + delta) / (grad_sq + delta))
        step_sq *= decay
        step_sq += keep * (diff * diff)
        diff *= rate
