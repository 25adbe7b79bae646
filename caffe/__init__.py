"""`import caffe`: pycaffe's API over the siamese toolkit (a thin mapping; the toolkit's Net and Solver do the work).

A real pycaffe earlier on sys.path is imported instead of this package.
"""
from siamese_cli.layers.python import CaffeLayer as Layer
from siamese_cli.proto.caffe_pb2 import TEST, TRAIN

from . import io
from ._mode import set_device, set_mode_cpu, set_mode_gpu, set_random_seed
from .classifier import Classifier
from .detector import Detector
from .net_spec import NetSpec, layers, params, to_proto
from .pycaffe import Net
from .solvers import (AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver, SGDSolver,
                      get_solver)

__version__ = "1.0.0"


def layer_type_list():
    """The layer types this toolkit knows (its registry), sorted."""
    from siamese_cli.layers import REGISTRY

    return sorted(REGISTRY)


def init_log(*args, **kwargs):
    """Accepted for compatibility; the toolkit logs to stderr in glog's layout already."""


__all__ = ["Net", "Layer", "TRAIN", "TEST", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver",
           "AdaDeltaSolver", "AdamSolver", "get_solver", "NetSpec", "layers", "params", "to_proto", "io",
           "Classifier", "Detector", "set_mode_cpu", "set_mode_gpu", "set_device", "set_random_seed",
           "layer_type_list", "init_log"]
