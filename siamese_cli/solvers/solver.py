"""Solver: Caffe's training loop (test, display, update, snapshot) around a train net and its test nets.

Subclasses differ only in `compute_update`, the rule that turns one parameter's
regularised gradient into the step that is subtracted from its data.
"""
import time
from contextlib import ExitStack, nullcontext
from pathlib import Path

import numpy as np

from ..errors import SiameseError
from ..io.prototxt import read_net
from ..log import CaffeLog, TrainLog, fmt, output_line
from ..net import Net
from ..parallel import SingleProcess
from ..progress import Progress
from ..proto import caffe_pb2
from .checks import check_solver_fields, field_location, non_finite_loss
from .lr_policies import learning_rate
from .signals import SignalRequests
from .snapshot import Snapshots

f32 = np.float32


QUIET_FLOATS = {"over": "ignore", "invalid": "ignore", "divide": "ignore"}

class Solver(Snapshots):
    """Owns the train net, the test nets (sharing its weights), the iteration count and the update history.

    `source` is the solver file (for error messages); `allow_nan` trains on through non-finite
    losses as Caffe does; `snapshot_on_stop` snapshots on SIGINT/SIGTERM even with
    `snapshot_after_train: false`. `parallel` is the data-parallel context (parallel/; one process by default).
    """

    type = None
    history_sets = 1  # history blobs per learnable param (AdaDelta and Adam keep two)

    def __init__(self, param, log=None, log_path=None, seed=None, source=None, allow_nan=False,
                 snapshot_on_stop=False, parallel=None):
        self.param = param
        self.parallel = parallel or SingleProcess()
        self.source = source
        self.log = log or CaffeLog()
        check_solver_fields(param, source)
        self.check_param()
        self.allow_nan = allow_nan
        self.snapshot_on_stop = snapshot_on_stop
        self.train_log = TrainLog(log_path) if log_path else None
        self.iter = 0
        self.current_step = 0
        self.requested = None  # "snapshot", "stop" or None, set by signal handlers
        self.stop_signal = None  # the signal that asked for the stop, if any
        self.last_snapshot = None  # the newest complete .solverstate written or resumed from
        self.spent = {"testing": [0.0, 0], "snapshots": [0.0, 0]}  # seconds and count, for the closing Time line
        seed = param.random_seed if seed is None and param.random_seed >= 0 else seed
        if seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**31))
            self.log(f"random_seed not set; using {seed} (set random_seed in the solver to repeat this run)")
        self.seed = seed + self.parallel.rank  # as Caffe's Solver::Init: one random stream per rank
        if param.HasField("solver_mode") and param.solver_mode == caffe_pb2.SolverParameter.GPU:
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
        path = None
        if p.HasField("train_net_param"):
            net_param = p.train_net_param
        elif p.HasField("net_param"):
            net_param = p.net_param
        else:
            path = p.train_net if p.HasField("train_net") else p.net
            self.log(f"Creating training net from net file: {path}")
            net_param = self._read_named_net(path, "train_net" if p.HasField("train_net") else "net")
        state = p.train_state
        return Net(net_param, phase="TRAIN", level=state.level, stages=list(state.stage), seed=self.seed, source=path)

    def _read_named_net(self, path, field, value=None):
        """read_net, but a missing file is said to be named by the solver (its file and line)."""
        if self.source and not Path(path).exists():
            where = field_location(self.source, field, value)
            raise SiameseError(f"{path}: no such file, named by {field} in {where}; check the path (relative "
                               f"paths start at the working directory)")
        return read_net(path)

    def check_param(self):
        """Per-type checks of the solver message (Caffe's constructor sanity checks); none by default."""

    def _test_nets(self):
        p = self.param
        params = list(p.test_net_param)
        for path in p.test_net:
            params.append(self._read_named_net(path, "test_net", path))
        generic = len(p.test_iter) - len(params)
        if generic > 0 and (p.HasField("net") or p.HasField("net_param")):
            base = p.net_param if p.HasField("net_param") else self._read_named_net(p.net, "net")
            params.extend([base] * generic)
        if len(p.test_iter) != len(params):
            raise SiameseError(f"the solver gives {len(p.test_iter)} test_iter value(s) for {len(params)} test net(s); "
                               f"give one test_iter per test net")
        if params and p.test_interval <= 0:
            self.log.warning("test_interval is 0: the test nets are never run")
        nets = []
        for k, net_param in enumerate(params):
            state = p.test_state[k] if k < len(p.test_state) else caffe_pb2.NetState()
            named = list(p.test_net) + ([p.net] * generic if p.HasField("net") else [])  # files, for errors
            j = k - len(p.test_net_param)
            source = named[j] if 0 <= j < len(named) else None
            nets.append(Net(net_param, phase="TEST", level=state.level, stages=list(state.stage),
                            seed=self.seed + 1 + k, source=source))
        return nets

    # ---- the loop ---------------------------------------------------------------
    def solve(self, handle_signals=True, close=True):
        """Train from the current iteration to max_iter, then snapshot and test as Caffe does.

        A stop by signal snapshots (unless snapshot_after_train is false and snapshot_on_stop
        is not set) and returns with `stop_signal` set; a non-finite loss raises NonFiniteError
        without snapshotting. With close=False the nets stay open (their data readers too) for
        use after training.
        """
        p = self.param
        self.check_snapshot_prefix(on_stop=self.snapshot_on_stop)
        if self.train_log:
            self.train_log.open()
        self.log(f"Solving {self.net.name}")
        self.log(f"Learning Rate Policy: {p.lr_policy}")
        start_iter, started = self.iter, time.perf_counter()
        try:
            with SignalRequests(self) if handle_signals else nullcontext():
                self._solve(start_iter)
            self.log(self.time_line(time.perf_counter() - started))
        finally:
            self.log.progress = None
            try:
                if self.train_log:
                    self.train_log.close()
            finally:
                if close:
                    self.close()

    def _solve(self, start_iter):
        p = self.param
        with Progress(p.max_iter, "train", initial=self.iter) as bar:
            self.log.progress = bar if bar.enabled else None
            self.step(p.max_iter - self.iter, bar)
            self.log.progress = None
        stopped = self.requested == "stop"
        just_saved = p.snapshot and self.iter % p.snapshot == 0
        if (p.snapshot_after_train or (stopped and self.snapshot_on_stop)) and not just_saved:
            self.snapshot()
        if stopped:
            self.log("Optimization stopped early.")
            return
        if p.display and self.iter % p.display == 0:  # the final loss: a forward pass only
            loss = self.net.forward_loss()
            self._update_smoothed_loss(loss, start_iter)
            self.log(f"Iteration {self.iter}, loss = {fmt(self.smoothed_loss)}")
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
        self.log("Optimization Done.")

    def step(self, iters, bar=None):
        """Run `iters` iterations (with their test passes and snapshots); every blob is current when it returns."""
        with ExitStack() as passes:
            for net in [self.net, *self.test_nets]:
                passes.enter_context(net.batch_last_between_passes())
            self._step(iters, bar)

    def _step(self, iters, bar):
        p = self.param
        start_iter, stop_iter = self.iter, self.iter + iters
        self.losses, self.smoothed_loss = [], 0.0
        last_time, last_iter = time.perf_counter(), self.iter  # rates count from here, so a resume too
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and (self.iter > 0 or p.test_initialization):
                self.test_all()
                if self.requested == "stop":
                    break
            display = p.display and self.iter % p.display == 0
            loss = 0.0
            for _ in range(p.iter_size):
                # The non-finite check below reports an overflow in one line; numpy's warnings would repeat it.
                with np.errstate(**({} if self.allow_nan else QUIET_FLOATS)):
                    loss += self.net.forward_backward()
                if not (self.allow_nan or np.isfinite(loss)):
                    raise non_finite_loss(self.net, self.iter, loss, self.last_snapshot)
            loss /= p.iter_size
            loss, self.requested = self.parallel.reduce_gradients(self.net.learnable_params, loss, self.requested)
            self._update_smoothed_loss(loss, start_iter)
            if self.train_log:
                self.train_log.write("train", self.iter, "loss", loss)
            if display:
                now = time.perf_counter()
                lapse, count = now - last_time, self.iter - last_iter
                per_s = count / (lapse or 1.0)
                span = count if 0 < count != p.display else p.display  # fewer after a resume between lines
                self.log(f"Iteration {self.iter} ({fmt(per_s)} iter/s, {fmt(lapse)}s/{span} iters), "
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

    def time_line(self, total):
        """Where the wall time of a solve went: training (everything else), test passes, snapshots."""
        (testing, passes), (saving, saves) = self.spent["testing"], self.spent["snapshots"]
        return (f"Time: {total:.1f} s in all: training {total - testing - saving:.1f} s, testing {testing:.1f} s "
                f"({passes} passes), snapshots {saving:.1f} s ({saves})")

    def test_all(self):
        started = time.perf_counter()
        for k in range(len(self.test_nets)):
            if self.requested == "stop":
                break
            self.test(k)
        self.spent["testing"][0] += time.perf_counter() - started
        self.spent["testing"][1] += len(self.test_nets)

    def test(self, k=0):
        """Run test_iter[k] batches of test net k; log the mean of each output. Returns {name: mean}.

        A stop requested before the last batch ends the pass with "Test interrupted." and nothing
        else (no partial means, nothing in the --log file); it returns None then.
        """
        net = self.test_nets[k]
        iterations = self.param.test_iter[k]
        self.log(f"Iteration {self.iter}, Testing net (#{k})")
        done = []

        def after_batch(i):
            done.append(i)
            return self.requested == "stop"

        loss, means = self.parallel.mean_outputs(net, iterations, after_batch=after_batch)
        if len(done) < iterations:
            self.log("Test interrupted.")
            return None
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
        step = self.current_step
        rate, self.current_step = learning_rate(p, self.iter, step)
        if p.lr_policy == "multistep" and self.current_step != step:
            self.log(f"MultiStep Status: Iteration {self.iter}, step = {self.current_step}")
        if display:
            self.log(f"Iteration {self.iter}, lr = {fmt(rate)}")
            if self.train_log:
                self.train_log.write("train", self.iter, "lr", rate)
        self.clip_gradients()
        params = self.net.learnable_params
        done = []
        for index, param in enumerate(params):
            self.normalize(param)
            local_rate = f32(rate * f32(param.lr_mult))
            done.append(self.update_in_one_pass(index, param, local_rate))
            if not done[-1]:
                self.regularize(param)
                self.compute_update(index, param, local_rate)
        for param, updated in zip(params, done):
            if not updated:
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

    def update_in_one_pass(self, index, param, rate):
        """Regularize, compute the update and apply it in one step, when a solver can (compiled kernels); else False."""
        return False

    def compute_update(self, index, param, rate):
        """Replace param.blob.diff by the step to subtract from its data."""
        raise NotImplementedError

    def close(self):
        self.net.close()
        for net in self.test_nets:
            net.close()

