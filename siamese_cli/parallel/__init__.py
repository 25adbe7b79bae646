"""Data-parallel training: one process (the default) or N MPI ranks (parallel/mpi.py).

The Solver sees a context through four members -- `rank`, `is_root`, `reduce_gradients`
(called between backward and the update) and `mean_outputs` (a test pass) -- and knows
nothing else about how many processes take part. `data_parallel()` picks the context.
"""
import os

from ..errors import SiameseError

# Set by MPI launchers in every process they start: MPICH/Intel MPI (Hydra, and Slurm's PMI),
# Open MPI, MVAPICH. Read without importing mpi4py, so a plain run never loads MPI.
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")

INSTALL_HINT = 'pip install -e ".[mpi]" (mpi4py and MPICH from wheels)'


def launched_size(environ=None):
    """How many processes the MPI launcher that started this one started (1 when none did)."""
    environ = os.environ if environ is None else environ
    for name in _SIZE_VARIABLES:
        value = environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


class SingleProcess:
    """The one-process context: every hook is the identity, and the with-block changes nothing."""

    rank = 0
    size = 1
    is_root = True
    log = None  # the solver's default log

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def reduce_gradients(self, params, loss, requested):
        return loss, requested

    def mean_outputs(self, net, iterations, after_batch=None):
        return net.mean_outputs(iterations, after_batch)

    def solve(self, solver):
        solver.solve()


def data_parallel(mpi=None, debug=False, environ=None):
    """The context for a training run.

    mpi=True asks for MPI; None (the default) uses it when an MPI launcher started more than
    one process; False never does. MPI needs mpi4py: without it both ways to ask for it say so.
    """
    size = launched_size(environ)
    if mpi is False or (mpi is None and size <= 1):
        return SingleProcess()
    try:
        from . import mpi as backend
    except (ImportError, RuntimeError) as exc:  # no mpi4py, or mpi4py without an MPI library
        where = (f"running under an MPI launcher with {size} processes" if size > 1 else "train --mpi")
        raise SiameseError(f"{where} needs mpi4py ({exc}); install it with {INSTALL_HINT}, "
                           f"or run one process without mpiexec") from None
    return backend.MPIRanks(debug=debug)


__all__ = ["SingleProcess", "data_parallel", "launched_size"]
