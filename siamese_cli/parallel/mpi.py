"""Data-parallel training over MPI (mpi4py), with Caffe's multi-GPU semantics.

Every rank builds the same solver; rank r's Data layers keep the records whose position
modulo N is r, so N ranks of batch B read what one process of batch N x B reads. After
backward, the gradients of all learnable params travel in one flat float32 buffer, summed by
one Allreduce and multiplied by 1/N; every rank then applies the same update and holds the
same weights. Rank 0's weights and history are broadcast at the start. Rank 0 alone logs and
writes snapshots. Test passes are split over the ranks and their outputs averaged.

A rank that raises prints one line and aborts the job (MPI_Abort), so no rank waits forever
in a collective; a rank that dies is seen by the launcher, which ends the others.
"""
import hashlib
import os
import signal
import sys
import time
import traceback

import numpy as np
from mpi4py import MPI

from ..errors import SiameseError
from .. import schedule
from ..log import CaffeLog
from ..solvers.signals import SignalRequests

f32 = np.float32
_STOP, _SNAPSHOT = 1, 2  # offsets after the gradients: [grads..., loss, stop votes, snapshot votes]


class _Discard:
    """A stream that drops what it is given (the log of ranks other than 0)."""

    def write(self, text):
        pass

    def flush(self):
        pass

    def isatty(self):
        return False


class MPIRanks:
    """The processes of MPI_COMM_WORLD as one data-parallel trainer.

    Use as a context manager around building and running the solver: an exception inside it
    ends every rank (exit status of the error) instead of leaving the others blocked.
    """

    def __init__(self, comm=None, debug=False):
        self.comm = comm or MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.is_root = self.rank == 0
        self.debug = debug
        self.log = CaffeLog() if self.is_root else CaffeLog(_Discard())
        self.requested = None  # a signal's request on this rank, voted on at the next reduction
        self.stop_signal = None
        self._buffer = None
        self._sharded_nets = set()  # ids of the test nets whose passes are split over the ranks
        self.reductions = 0
        self.reduce_seconds = 0.0
        self._share_cores()

    def _share_cores(self):
        """Ranks on one host split its cores: each gets cores / local ranks branch lanes (see schedule.py),
        unless SIAMESE_BRANCH_THREADS says otherwise, so that N ranks do not run 2N lanes on N cores."""
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        try:
            lanes = max(1, (os.cpu_count() or 1) // local.Get_size())
        finally:
            local.Free()
        os.environ.setdefault(schedule.ENV, str(lanes))

    # ---- failure handling -----------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or self.size == 1:
            return False  # one rank: the CLI reports it as for any run
        if isinstance(exc, SiameseError):
            code, text = exc.exit_code, str(exc)
        elif isinstance(exc, KeyboardInterrupt):
            code, text = 130, "interrupted"
        else:
            code, text = 1, f"internal error: {type(exc).__name__}: {exc}"
        if self.debug:
            traceback.print_exception(kind, exc, tb)
        sys.stderr.write(f"error: rank {self.rank} of {self.size}: {text}; ending all {self.size} ranks\n")
        sys.stderr.flush()
        time.sleep(0.2)  # lets the launcher forward the line before it ends the processes
        self.comm.Abort(code)  # the launcher ends every process
        os._exit(code)  # should Abort return before this process is ended

    # ---- start-up -------------------------------------------------------------------
    def attach(self, solver):
        """Split the solver's data over the ranks and give every rank rank 0's weights and history."""
        self.log(f"Using {self.size} MPI ranks: effective batch {self.size} x batch_size, "
                 f"{schedule.requested_lanes()} branch lane(s) per rank")
        for layer in solver.net.layers:
            self._shard(layer)
        for k, net in enumerate(solver.test_nets):
            iterations = solver.param.test_iter[k]
            if iterations % self.size:
                self.log.warning(f"test_iter {iterations} of test net #{k} is not a multiple of {self.size} ranks: "
                                 f"every rank runs the whole test pass (no speed-up; set test_iter to a multiple)")
                continue
            for layer in net.layers:
                self._shard(layer)
            self._sharded_nets.add(id(net))
        state = _unique_arrays([b.data for blobs in solver.net.params.values() for b in blobs] + solver.history)
        self._broadcast(state)

    def _shard(self, layer):
        shard = getattr(layer, "shard", None)
        if shard is not None:
            shard(self.rank, self.size, first_record=self.comm.bcast(layer.first_record, root=0))
        elif _reads_a_source(layer):
            self.log.warning(f'layer "{layer.name}" ({layer.type}) has no record filter: every rank reads the same '
                             f"records (N copies of one batch, not N batches); use a Data layer (LevelDB/LMDB)")

    def _broadcast(self, arrays):
        flat = np.concatenate([a.ravel() for a in arrays]) if arrays else np.zeros(0, f32)
        self.comm.Bcast(flat, root=0)
        offset = 0
        for a in arrays:
            a[...] = flat[offset:offset + a.size].reshape(a.shape)
            offset += a.size

    # ---- the run --------------------------------------------------------------------
    def solve(self, solver):
        """Attach, train, and check that the ranks ended with one set of weights.

        Signals are caught here, not by the solver: each rank gets them at a different point of its
        iteration, so they wait for the next reduction, where the ranks agree on them.
        """
        self.attach(solver)
        with SignalRequests(self):
            solver.solve(handle_signals=False)
        if solver.requested == "stop" and solver.stop_signal is None:
            solver.stop_signal = self.stop_signal or signal.SIGTERM  # stopped because another rank was asked
        digest = hashlib.sha256(b"".join(p.blob.data.tobytes() for p in solver.net.learnable_params)).hexdigest()
        digests = self.comm.allgather(digest)
        if len(set(digests)) != 1:
            raise SiameseError(f"the ranks ended with different weights ({len(set(digests))} versions); "
                               "the snapshot is rank 0's, please report this with the MPI in use")
        if self.reductions:
            self.log(f"Gradient allreduce: {self._buffer.nbytes} bytes per iteration, "
                     f"{self.reduce_seconds / self.reductions * 1e3:.3g} ms on average over {self.reductions}")

    # ---- the solver's hooks ---------------------------------------------------------
    def reduce_gradients(self, params, loss, requested):
        """Sum every param's diff over the ranks, times 1/N (one Allreduce); the mean loss and the
        agreed request ("stop" if any rank was asked to stop, else "snapshot" if any was asked to)."""
        sizes = [p.blob.diff.size for p in params]
        total = sum(sizes)
        if self._buffer is None or self._buffer.size != total + 3:
            self._buffer = np.empty(total + 3, f32)
        buffer = self._buffer
        offset = 0
        for p, size in zip(params, sizes):
            buffer[offset:offset + size] = p.blob.diff.reshape(-1)
            offset += size
        wish = self.requested or requested
        self.requested = None
        buffer[total] = loss
        buffer[total + _STOP] = wish == "stop"
        buffer[total + _SNAPSHOT] = wish == "snapshot"
        start = time.perf_counter()
        self.comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        self.reduce_seconds += time.perf_counter() - start
        self.reductions += 1
        gradients = buffer[:total]
        gradients *= f32(1.0 / self.size)
        offset = 0
        for p, size in zip(params, sizes):
            p.blob.diff[...] = gradients[offset:offset + size].reshape(p.blob.diff.shape)
            offset += size
        agreed = "stop" if buffer[total + _STOP] else "snapshot" if buffer[total + _SNAPSHOT] else None
        return float(buffer[total]) / self.size, agreed

    def mean_outputs(self, net, iterations, after_batch=None):
        """A test pass: each rank runs its 1/N of the batches over its share of the records; the
        outputs are averaged (a sum over ranks, then / N), the loss summed."""
        if id(net) not in self._sharded_nets:
            return net.mean_outputs(iterations, after_batch)

        def after_local_batch(i):  # local batch i stands for the pass's batches i*N .. i*N + N-1
            return any([after_batch(i * self.size + j) for j in range(self.size)]) if after_batch else False

        loss, means = net.mean_outputs(iterations // self.size, after_local_batch)
        names = list(means)
        flat = np.concatenate([[float(loss)]] + [np.ravel(means[n]).astype(np.float64) for n in names])
        self.comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        offset = 1
        for name in names:
            shape = np.shape(means[name])
            count = int(np.prod(shape))
            means[name] = (flat[offset:offset + count] / self.size).astype(f32).reshape(shape)
            offset += count
        return f32(flat[0]), means


def _unique_arrays(arrays):
    """Each array once (shared params appear under several layers)."""
    seen, unique = set(), []
    for a in arrays:
        if id(a) not in seen:
            seen.add(id(a))
            unique.append(a)
    return unique


def _reads_a_source(layer):
    """A layer that reads records from a file or DB named by a `source` field (ImageData, HDF5Data, ...)."""
    param = getattr(layer, "param", None)
    return param is not None and any(getattr(value, "source", "") for field, value in param.ListFields()
                                     if field.name.endswith("_param"))
