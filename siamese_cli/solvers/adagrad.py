"""AdaGrad: per-weight rates shrinking with the sum of squared gradients."""
import numpy as np

from .solver import Solver


class AdaGrad(Solver):
    type = "AdaGrad"

    def compute_update(self, index, param, rate):
        diff = param.blob.diff
        history = self.history[index]
        history += diff * diff
        diff[...] = rate * (diff / (np.sqrt(history) + np.float32(self.param.delta)))
