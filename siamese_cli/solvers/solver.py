"""Solver: Caffe's training loop (test, display, update, snapshot) around a train net and its test nets.

Subclasses differ only in `compute_update`, the rule that turns one parameter's
regularised gradient into the step that is subtracted from its data.
"""
import json
import signal
import threading
import time
from pathlib import Path

import numpy as np

from ..errors import SiameseError
from ..blob import array_to_proto
from ..io.files import read_binary_proto, write_bytes_atomic
from ..io.prototxt import read_net
from ..log import CaffeLog, fmt, output_line
from ..net import Net
from ..parallel import SingleProcess
from ..progress import Progress
from ..proto import caffe_pb2
from .lr_policies import learning_rate

f32 = np.float32


class TrainLog:
    """The --log file: one row per output value, as CSV (`phase,iter,name,value`) or JSON lines."""

    def __init__(self, path):
        self.path = Path(path)
        self.json = self.path.suffix in (".jsonl", ".json")
        self.handle = open(self.path, "w", encoding="utf-8")
        if not self.json:
            self.handle.write("phase,iter,name,value\n")

    def write(self, phase, iteration, name, value):
        if self.json:
            self.handle.write(json.dumps({"phase": phase, "iter": iteration, "name": name, "value": float(value)}) + "\n")
        else:
            self.handle.write(f"{phase},{iteration},{name},{float(value):.9g}\n")

    def close(self):
        self.handle.close()


class Solver:
    """Owns the train net, the test nets (sharing its weights), the iteration count and the update history."""

    type = None
    history_sets = 1  # history blobs per learnable param (AdaDelta and Adam keep two)

    def __init__(self, param, log=None, log_path=None, seed=None, parallel=None):
        self.param = param
        self.parallel = parallel or SingleProcess()  # data-parallel hooks (parallel/)
        self.log = log or CaffeLog()
        self.train_log = TrainLog(log_path) if log_path else None
        self.iter = 0
        self.current_step = 0
        self.requested = None  # "snapshot", "stop" or None, set by signal handlers
        seed = param.random_seed if seed is None and param.random_seed >= 0 else seed
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**31))
            self.log(f"random_seed not set; using {seed} (set random_seed in the solver to repeat this run)")
        self.seed = seed + self.parallel.rank  # as Caffe's Solver::Init: one random stream per rank
        if param.solver_mode == caffe_pb2.SolverParameter.GPU:
            self.log("solver_mode GPU requested; this toolkit computes on the CPU")
        self.net = self._train_net()
        self.test_nets = self._test_nets()
        for test_net in self.test_nets:
            test_net.share_weights_from(self.net)
        self.history = [np.zeros(p.blob.shape, np.float32)
                        for _ in range(self.history_sets) for p in self.net.learnable_params]
        self.losses = []
        self.smoothed_loss = 0.0

    # ---- nets -------------------------------------------------------------------
    def _train_net(self):
        p = self.param
        sources = [p.HasField("net"), p.HasField("net_param"), p.HasField("train_net"), p.HasField("train_net_param")]
        if sum(sources) != 1:
            raise SiameseError("the solver must name exactly one train net: net, net_param, train_net or "
                               "train_net_param")
        if p.HasField("train_net_param"):
            net_param = p.train_net_param
        elif p.HasField("net_param"):
            net_param = p.net_param
        else:
            path = p.train_net if p.HasField("train_net") else p.net
            self.log(f"Creating training net from net file: {path}")
            net_param = read_net(path)
        state = p.train_state
        return Net(net_param, phase="TRAIN", level=state.level, stages=list(state.stage), seed=self.seed)

    def _test_nets(self):
        p = self.param
        params = list(p.test_net_param)
        for path in p.test_net:
            params.append(read_net(path))
        generic = len(p.test_iter) - len(params)
        if generic > 0 and (p.HasField("net") or p.HasField("net_param")):
            base = p.net_param if p.HasField("net_param") else read_net(p.net)
            params.extend([base] * generic)
        if len(p.test_iter) != len(params):
            raise SiameseError(f"the solver gives {len(p.test_iter)} test_iter value(s) for {len(params)} test net(s); "
                               f"give one test_iter per test net")
        if params and p.test_interval <= 0:
            self.log.warning("test_interval is 0: the test nets are never run")
        nets = []
        for k, net_param in enumerate(params):
            state = p.test_state[k] if k < len(p.test_state) else caffe_pb2.NetState()
            nets.append(Net(net_param, phase="TEST", level=state.level, stages=list(state.stage),
                            seed=self.seed + 1 + k))
        return nets

    # ---- the loop ---------------------------------------------------------------
    def solve(self, handle_signals=True):
        """Train from the current iteration to max_iter, then snapshot and test as Caffe does."""
        p = self.param
        self.log(f"Solving {self.net.name}")
        self.log(f"Learning Rate Policy: {p.lr_policy}")
        previous = self._install_signal_handlers() if handle_signals else None
        start_iter = self.iter
        try:
            with Progress(p.max_iter - self.iter, "train") as bar:
                self.log.progress = bar if bar.enabled else None
                self.step(p.max_iter - self.iter, bar)
                self.log.progress = None
            just_saved = p.snapshot and self.iter % p.snapshot == 0
            if (p.snapshot_after_train or self.requested == "stop") and not just_saved:
                self.snapshot()
            if self.requested == "stop":
                self.log("Optimization stopped early.")
                return
            if p.display and self.iter % p.display == 0:
                loss = self.net.forward_loss()
                self._update_smoothed_loss(loss, start_iter)
                self.log(f"Iteration {self.iter}, loss = {fmt(self.smoothed_loss)}")
            if p.test_interval and self.iter % p.test_interval == 0:
                self.test_all()
            self.log("Optimization Done.")
        finally:
            self.log.progress = None
            if previous:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            if self.train_log:
                self.train_log.close()
            self.close()

    def step(self, iters, bar=None):
        p = self.param
        start_iter, stop_iter = self.iter, self.iter + iters
        self.losses, self.smoothed_loss = [], 0.0
        last_time, last_iter = time.perf_counter(), self.iter
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and (self.iter > 0 or p.test_initialization):
                self.test_all()
                if self.requested == "stop":
                    break
            display = p.display and self.iter % p.display == 0
            loss = 0.0
            for _ in range(p.iter_size):
                loss += self.net.forward_backward()
            loss /= p.iter_size
            loss, self.requested = self.parallel.reduce_gradients(self.net.learnable_params, loss, self.requested)
            self._update_smoothed_loss(loss, start_iter)
            if self.train_log:
                self.train_log.write("train", self.iter, "loss", loss)
            if display:
                now = time.perf_counter()
                lapse = now - last_time
                per_s = (self.iter - last_iter) / (lapse or 1.0)
                self.log(f"Iteration {self.iter} ({fmt(per_s)} iter/s, {fmt(lapse)}s/{p.display} iters), "
                         f"loss = {fmt(self.smoothed_loss)}")
                last_time, last_iter = now, self.iter
                self._log_outputs("Train", self.net)
            self.apply_update(display)
            self.iter += 1
            if bar is not None:
                bar.update(1, loss=self.smoothed_loss)
            if (p.snapshot and self.iter % p.snapshot == 0) or self.requested == "snapshot":
                self.snapshot()
                if self.requested == "snapshot":
                    self.requested = None
            if self.requested == "stop":
                break

    def _update_smoothed_loss(self, loss, start_iter):
        average = self.param.average_loss
        if len(self.losses) < average:
            self.losses.append(loss)
            size = len(self.losses)
            self.smoothed_loss = (self.smoothed_loss * (size - 1) + loss) / size
        else:
            index = (self.iter - start_iter) % average
            self.smoothed_loss += (loss - self.losses[index]) / average
            self.losses[index] = loss

    def _log_outputs(self, kind, net, values=None):
        """Caffe's `Train/Test net output #k: name = v (* w = w*v loss)` lines, one per output element."""
        index = 0
        for name, data, weight in net.output_values():
            data = values[name] if values is not None else data
            for value in np.ravel(data):
                self.log(f"    {kind} net output #{index}: {output_line(name, value, weight)}")
                index += 1

    def test_all(self):
        for k in range(len(self.test_nets)):
            self.test(k)

    def test(self, k=0):
        """Run test_iter[k] batches of test net k; log the mean of each output. Returns {name: mean}."""
        net = self.test_nets[k]
        iterations = self.param.test_iter[k]
        self.log(f"Iteration {self.iter}, Testing net (#{k})")
        loss, means = self.parallel.mean_outputs(net, iterations, after_batch=lambda i: self.requested == "stop")
        if self.param.test_compute_loss:
            self.log(f"Test loss: {fmt(loss / iterations)}")
        self._log_outputs("Test", net, means)
        if self.train_log:
            for name, mean in means.items():
                for value in np.ravel(mean):
                    self.train_log.write("test", self.iter, name, value)
        return means

    # ---- the update -------------------------------------------------------------
    def apply_update(self, display=False):
        p = self.param
        rate, self.current_step = learning_rate(p, self.iter, self.current_step)
        if display:
            self.log(f"Iteration {self.iter}, lr = {fmt(rate)}")
            if self.train_log:
                self.train_log.write("train", self.iter, "lr", rate)
        self.clip_gradients()
        params = self.net.learnable_params
        for index, param in enumerate(params):
            self.normalize(param)
            self.regularize(param)
            self.compute_update(index, param, f32(rate * f32(param.lr_mult)))
        for param in params:
            param.blob.data -= param.blob.diff

    def clip_gradients(self):
        threshold = self.param.clip_gradients
        if threshold < 0:
            return
        sumsq = sum(float(np.dot(q.blob.diff.ravel(), q.blob.diff.ravel())) for q in self.net.learnable_params)
        norm = np.sqrt(sumsq)
        if norm > threshold:
            scale = f32(threshold / norm)
            self.log(f"Gradient clipping: scaling down gradients (L2 norm {fmt(norm)} > {fmt(threshold)}) "
                     f"by scale factor {fmt(scale)}")
            for q in self.net.learnable_params:
                q.blob.diff *= scale

    def normalize(self, param):
        if self.param.iter_size > 1:
            param.blob.diff *= f32(1.0 / self.param.iter_size)

    def regularize(self, param):
        decay = f32(self.param.weight_decay * param.decay_mult)
        if not decay:
            return
        kind = self.param.regularization_type
        if kind == "L2":
            param.blob.diff += decay * param.blob.data
        elif kind == "L1":
            param.blob.diff += decay * np.sign(param.blob.data)
        else:
            raise SiameseError(f'unknown regularization_type "{kind}" in the solver; use L2 or L1')

    def compute_update(self, index, param, rate):
        """Replace param.blob.diff by the step to subtract from its data."""
        raise NotImplementedError

    # ---- snapshots ----------------------------------------------------------------
    def snapshot_paths(self):
        prefix = self.param.snapshot_prefix
        if not prefix:
            raise SiameseError("the solver has no snapshot_prefix; add one to save snapshots")
        return f"{prefix}_iter_{self.iter}.caffemodel", f"{prefix}_iter_{self.iter}.solverstate"

    def snapshot(self):
        if self.param.snapshot_format == caffe_pb2.SolverParameter.HDF5:
            self.log.warning("snapshot_format HDF5 is not supported; writing BINARYPROTO")
        model_path, state_path = self.snapshot_paths()
        if not self.parallel.is_root:  # every rank holds the same state; the root writes it
            return model_path, state_path
        self.log(f"Snapshotting to binary proto file {model_path}")
        write_bytes_atomic(model_path, self.net.to_proto(self.param.snapshot_diff).SerializeToString())
        self.log(f"Snapshotting solver state to binary proto file {state_path}")
        state = caffe_pb2.SolverState(iter=self.iter, learned_net=model_path, current_step=self.current_step)
        state.history.extend(array_to_proto(values) for values in self.history)
        write_bytes_atomic(state_path, state.SerializeToString())
        return model_path, state_path

    def restore(self, state_path):
        """Resume from a .solverstate: iteration, lr step, history, and the weights it names."""
        self.log(f"Restoring previous solver status from {state_path}")
        if str(state_path).endswith(".h5"):
            raise SiameseError(f"{state_path}: HDF5 solver states are not supported; use a .solverstate file")
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
            learned = Path(state.learned_net)
            if not learned.exists() and (Path(state_path).parent / learned.name).exists():
                learned = Path(state_path).parent / learned.name
            self.net.copy_from(learned)
        self._resume_data_position()

    def _resume_data_position(self):
        """Move the train net's data readers to where an uninterrupted run would be at this iteration."""
        batches = self.iter * self.param.iter_size
        for layer in self.net.layers:
            skip = getattr(layer, "skip_batches", None)
            if skip:
                skip(batches)

    # ---- signals ------------------------------------------------------------------
    def _install_signal_handlers(self):
        """Caffe's defaults: SIGINT (and here SIGTERM) snapshot and stop; SIGHUP snapshots and goes on."""
        if threading.current_thread() is not threading.main_thread():
            return None
        actions = {signal.SIGINT: "stop", signal.SIGTERM: "stop", signal.SIGHUP: "snapshot"}

        def on_signal(signum, frame):
            if self.requested != "stop":
                self.requested = actions[signum]

        return {sig: signal.signal(sig, on_signal) for sig in actions}

    def close(self):
        self.net.close()
        for net in self.test_nets:
            net.close()
