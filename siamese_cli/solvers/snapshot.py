"""Snapshots as pairs: PREFIX_iter_N.caffemodel and PREFIX_iter_N.solverstate, both complete or neither.

Each file is written (and fsynced) under a temporary name beside its target, then renamed
into place: first the .caffemodel, then the .solverstate. The .solverstate is what a resume
starts from and it names its .caffemodel, so it comes last: whatever stops the process (a
full disk, SIGKILL, a power cut), the newest .solverstate on disk has its complete .caffemodel
beside it. A failure after the .caffemodel is in place removes it again, so the previous pair
stays the newest.
"""
import os
import time
from pathlib import Path

import numpy as np

from ..blob import array_to_proto
from ..errors import SiameseError
from ..io.files import atomic_path, check_writable, read_binary_proto
from ..proto import caffe_pb2
from .checks import non_finite_weights

# Seconds to wait between the two renames. Only tests set it, to kill a run in the middle of a snapshot.
PAUSE_ENV = "SIAMESE_TEST_SNAPSHOT_PAUSE"


def _write_synced(path, payload):
    with open(path, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())


def write_pair(model_path, model_bytes, state_path, state_bytes):
    """Write both files of a snapshot so that a failure leaves either both or neither in place."""
    model_placed = False
    try:
        with atomic_path(state_path) as state_tmp:
            with atomic_path(model_path) as model_tmp:
                _write_synced(model_tmp, model_bytes)
            model_placed = True
            pause = float(os.environ.get(PAUSE_ENV) or 0)
            if pause > 0:
                time.sleep(pause)
            _write_synced(state_tmp, state_bytes)
        # the .solverstate is renamed into place as the block ends: the pair is complete
    except BaseException:
        if model_placed:
            Path(model_path).unlink(missing_ok=True)
        raise


class Snapshots:
    """The Solver's snapshot and restore (mixed into Solver)."""

    def snapshot_paths(self):
        prefix = self.param.snapshot_prefix
        if not prefix:
            raise SiameseError("the solver has no snapshot_prefix; add one to save snapshots")
        return f"{prefix}_iter_{self.iter}.caffemodel", f"{prefix}_iter_{self.iter}.solverstate"

    def check_snapshot_prefix(self, on_stop=False):
        """Before iteration 0, as Caffe does: the snapshot folder must take a file (created if missing)."""
        p = self.param
        if not (p.snapshot or p.snapshot_after_train or on_stop):
            return
        if not p.snapshot_prefix:
            needs = "snapshot is set" if p.snapshot else "a snapshot is written at the end (snapshot_after_train)"
            raise SiameseError(f"the solver has no snapshot_prefix but {needs}; add snapshot_prefix, "
                               f"or set snapshot: 0 and snapshot_after_train: false")
        check_writable(f"{p.snapshot_prefix}_iter_{self.iter}.caffemodel")

    def snapshot(self):
        """Write the pair for the current iteration; returns (model path, state path)."""
        started = time.perf_counter()
        try:
            return self._write_snapshot()
        finally:
            self.spent["snapshots"][0] += time.perf_counter() - started
            self.spent["snapshots"][1] += 1

    def _write_snapshot(self):
        if not self.allow_nan:
            error = non_finite_weights(self.net, self.iter, self.last_snapshot)
            if error is not None:
                raise error
        if self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5:
            from ..io import hdf5

            model_path, state_path = hdf5.snapshot(self)
            self.last_snapshot = state_path
            return model_path, state_path
        model_path, state_path = self.snapshot_paths()
        if not self.parallel.is_root:  # every rank holds the same state; the root writes it
            return model_path, state_path
        self.log(f"Snapshotting to binary proto file {model_path}")
        model_bytes = self.net.to_proto(self.param.snapshot_diff).SerializeToString()
        self.log(f"Snapshotting solver state to binary proto file {state_path}")
        state = caffe_pb2.SolverState(iter=self.iter, learned_net=model_path, current_step=self.current_step)
        state.history.extend(array_to_proto(values) for values in self.history)
        write_pair(model_path, model_bytes, state_path, state.SerializeToString())
        self.last_snapshot = state_path
        return model_path, state_path

    def restore(self, state_path):
        """Resume from a .solverstate: iteration, lr step, history, and the weights it names."""
        self.log(f"Restoring previous solver status from {state_path}")
        if str(state_path).endswith(".h5"):
            from ..io.hdf5 import read_solver_state

            state = read_solver_state(state_path)
        else:
            state = read_binary_proto(state_path, caffe_pb2.SolverState())
        if len(state.history) != len(self.history):
            raise SiameseError(f"{state_path}: {len(state.history)} history blobs, but this solver ({self.type}) "
                               f"for this net needs {len(self.history)}; is it the state of another net or solver?")
        for k, blob in enumerate(state.history):
            values = np.array(blob.data, np.float32)
            if values.size != self.history[k].size:
                raise SiameseError(f"{state_path}: history blob {k} has {values.size} values, the net needs "
                                   f"{self.history[k].size}")
            self.history[k][...] = values.reshape(self.history[k].shape)
        self.iter = state.iter
        self.current_step = state.current_step
        if state.learned_net:
            if isinstance(state.learned_net, bytes):  # protobuf hands back invalid UTF-8 as bytes
                raise SiameseError(f"{state_path}: learned_net is not a valid file name; is the .solverstate corrupt?")
            learned = Path(state.learned_net)
            if not learned.exists() and (Path(state_path).parent / learned.name).exists():
                learned = Path(state_path).parent / learned.name
            self.net.copy_from(learned)
        self._resume_data_position()
        self.last_snapshot = str(state_path)
        if self.train_log is not None:
            self.train_log.resume_at = self.iter

    def _resume_data_position(self):
        """Move the train net's data readers to where an uninterrupted run would be at this iteration."""
        batches = self.iter * self.param.iter_size
        for layer in self.net.layers:
            skip = getattr(layer, "skip_batches", None)
            if skip:
                skip(batches)
