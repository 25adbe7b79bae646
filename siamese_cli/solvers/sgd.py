"""Stochastic gradient descent with momentum (Caffe's default solver)."""
import numpy as np

from .solver import Solver


class SGD(Solver):
    """history = momentum * history + rate * diff; the step is history."""

    type = "SGD"

    def compute_update(self, index, param, rate):
        history = self.history[index]
        history *= np.float32(self.param.momentum)
        history += rate * param.blob.diff
        param.blob.diff[...] = history
