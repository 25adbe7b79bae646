"""Stochastic gradient descent with momentum (Caffe's default solver)."""
import numpy as np

from .. import accel
from .solver import Solver


class SGD(Solver):
    """history = momentum * history + rate * diff; the step is history."""

    type = "SGD"

    def compute_update(self, index, param, rate):
        history = self.history[index]
        history *= np.float32(self.param.momentum)
        history += rate * param.blob.diff
        param.blob.diff[...] = history

    def update_in_one_pass(self, index, param, rate):
        """With the compiled kernels, L2 decay, the momentum step and data -= step as one pass (same float32 sums)."""
        if not hasattr(self, "_kernels"):  # looked up once: finding the compiler searches PATH
            self._kernels = accel.kernels() if type(self) is SGD else None  # subclasses keep their own rules
        kernels = self._kernels
        if kernels is None or (self.param.regularization_type != "L2" and self.param.weight_decay):
            return False
        blob, history = param.blob, self.history[index]
        if not (blob.data.flags.c_contiguous and blob.diff.flags.c_contiguous and history.flags.c_contiguous):
            return False
        decay = np.float32(self.param.weight_decay * param.decay_mult)
        kernels.sgd_update(kernels.ptr(blob.data), kernels.ptr(blob.diff), kernels.ptr(history), history.size,
                           float(rate), float(np.float32(self.param.momentum)), float(decay))
        return True
