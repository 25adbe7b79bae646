"""One rank of the MPI tests: `siamese train ARGS...` through the CLI, with test hooks from the environment.

SIAMESE_TEST_OUT: folder for weights_rank{r}.npy (each rank's weights at the end) and pid{r}.
SIAMESE_TEST_FAIL: "RANK:ITERATION", that rank raises at that iteration's gradient reduction.
"""
import os
import sys
from pathlib import Path

import numpy as np

from siamese_cli import cli
from siamese_cli.parallel import mpi

out = Path(os.environ["SIAMESE_TEST_OUT"])
fail_rank, _, fail_at = os.environ.get("SIAMESE_TEST_FAIL", "-1:-1").partition(":")
solve, reduce_gradients = mpi.MPIRanks.solve, mpi.MPIRanks.reduce_gradients


def solve_and_save(self, solver):
    (out / f"pid{self.rank}").write_text(str(os.getpid()))
    solve(self, solver)
    weights = np.concatenate([p.blob.data.ravel() for p in solver.net.learnable_params])
    np.save(out / f"weights_rank{self.rank}.npy", weights)


def reduce_or_fail(self, params, loss, requested):
    if self.rank == int(fail_rank) and self.reductions == int(fail_at):
        raise RuntimeError(f"test failure injected at iteration {fail_at}")
    return reduce_gradients(self, params, loss, requested)


mpi.MPIRanks.solve, mpi.MPIRanks.reduce_gradients = solve_and_save, reduce_or_fail
sys.exit(cli.main(sys.argv[1:]))
