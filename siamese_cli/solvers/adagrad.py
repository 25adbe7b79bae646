"""AdaGrad: per-weight rates shrinking with the sum of squared gradients."""
import numpy as np

from .checks import check_momentum_unused
from .solver import Solver


class AdaGrad(Solver):
    type = "AdaGrad"

    def check_param(self):
        check_momentum_unused(self)

    def compute_update(self, index, param, rate):
        diff = param.blob.diff
        history = self.history[index]
        history += diff * diff
        diff[...] = rate * (diff / (np.sqrt(history) + np.float32(self.param.delta)))
