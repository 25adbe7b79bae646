"""Nesterov's accelerated gradient, in Caffe's formulation."""
import numpy as np

from .solver import Solver


class Nesterov(Solver):
    """The step looks ahead: (1 + momentum) * new history - momentum * old history."""

    type = "Nesterov"

    def compute_update(self, index, param, rate):
        momentum = np.float32(self.param.momentum)
        history = self.history[index]
        previous = history.copy()
        history *= momentum
        history += rate * param.blob.diff
        param.blob.diff[...] = (np.float32(1) + momentum) * history - momentum * previous
