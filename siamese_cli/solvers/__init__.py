"""Solvers, one module per update rule; `load_solver` reads a solver prototxt and builds the right one."""
from ..errors import SiameseError
from ..io.prototxt import read_solver
from ..proto import caffe_pb2
from .adadelta import AdaDelta
from .adagrad import AdaGrad
from .adam import Adam
from .checks import NonFiniteError, check_solver_fields, field_location
from .nesterov import Nesterov
from .rmsprop import RMSProp
from .sgd import SGD
from .solver import Solver

SOLVERS = {cls.type: cls for cls in (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam)}
_LEGACY = {caffe_pb2.SolverParameter.SGD: "SGD", caffe_pb2.SolverParameter.NESTEROV: "Nesterov",
           caffe_pb2.SolverParameter.ADAGRAD: "AdaGrad", caffe_pb2.SolverParameter.RMSPROP: "RMSProp",
           caffe_pb2.SolverParameter.ADADELTA: "AdaDelta", caffe_pb2.SolverParameter.ADAM: "Adam"}


def solver_type(param):
    """The solver type string, honouring the deprecated `solver_type` enum as Caffe does."""
    if param.HasField("solver_type") and not param.HasField("type"):
        return _LEGACY[param.solver_type]
    return param.type


def make_solver(param, **kwargs):
    """The solver of the type `param` names; `source` (the solver file) makes errors point into it."""
    source = kwargs.get("source")
    check_solver_fields(param, source)
    name = solver_type(param)
    if name not in SOLVERS:
        field = "type" if param.HasField("type") else "solver_type"
        raise SiameseError(f'{field_location(source, field)}: unknown solver type "{name}"; '
                           f'use one of {", ".join(SOLVERS)}')
    return SOLVERS[name](param, **kwargs)


def load_solver(path, max_iter=None, **kwargs):
    """Build the solver a solver .prototxt describes; `max_iter` overrides the file's value."""
    param = read_solver(path)
    if max_iter is not None:
        param.max_iter = max_iter
    return make_solver(param, source=str(path), **kwargs)


__all__ = ["SOLVERS", "NonFiniteError", "Solver", "load_solver", "make_solver", "solver_type"] + list(SOLVERS)
