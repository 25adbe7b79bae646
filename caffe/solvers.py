"""pycaffe's solvers (caffe.SGDSolver(path), caffe.get_solver(path)) over siamese_cli.solvers."""
import os

from siamese_cli.io.prototxt import read_solver
from siamese_cli.layers.python import module_dirs, solver_files
from siamese_cli.solvers import SOLVERS, make_solver
from siamese_cli.solvers.checks import check_solver_fields

from . import _mode
from .pycaffe import Net


class Solver:
    """A solver built from a solver .prototxt; `.net`, `.test_nets`, `.iter`, `.step(n)`, `.solve()`."""

    type = None  # None: the type the file names (get_solver)

    def __init__(self, path):
        path = os.fsdecode(path)
        param = read_solver(path)
        seed = _mode.next_seed() if param.random_seed < 0 else None
        with module_dirs(*solver_files(path)):
            if self.type:  # caffe.SGDSolver(path) uses SGD whatever the file names, as pycaffe does
                check_solver_fields(param, path)
                self._solver = SOLVERS[self.type](param, seed=seed, source=path)
            else:
                self._solver = make_solver(param, seed=seed, source=path)
        self.net = Net.wrap(self._solver.net)
        self.test_nets = [Net.wrap(net) for net in self._solver.test_nets]

    @property
    def iter(self):
        return self._solver.iter

    @property
    def param(self):
        return self._solver.param

    def step(self, iters):
        """Run `iters` iterations (testing, displaying and snapshotting on the solver's schedule)."""
        self._solver.step(int(iters))

    def solve(self, snapshot=None):
        """Train to max_iter, resuming from the .solverstate `snapshot` when given."""
        if snapshot:
            self.restore(snapshot)
        self._solver.solve(close=False)

    def restore(self, state_path):
        self._solver.restore(os.fsdecode(state_path))

    def snapshot(self):
        self._solver.snapshot()

    def apply_update(self):
        """One update from the gradients already in the param diffs (after net.forward/backward)."""
        self._solver.apply_update()

    def __repr__(self):
        return f"<caffe {type(self).__name__} iter {self.iter}>"


def _solver_class(kind):
    return type(f"{kind}Solver", (Solver,), {"type": kind, "__doc__": f"caffe.{kind}Solver(path): the {kind} rule."})


SGDSolver = _solver_class("SGD")
NesterovSolver = _solver_class("Nesterov")
AdaGradSolver = _solver_class("AdaGrad")
RMSPropSolver = _solver_class("RMSProp")
AdaDeltaSolver = _solver_class("AdaDelta")
AdamSolver = _solver_class("Adam")


def get_solver(path):
    """The solver of the type the file names (`type: "Adam"`, or the older solver_type)."""
    return Solver(path)
