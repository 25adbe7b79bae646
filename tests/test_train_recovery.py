"""What training does when things go wrong: non-finite losses, unwritable or full disks, interrupted
test passes, resumed logs and rates. In-process, on test_solver's tiny net."""
import errno
import json
import re
import warnings

import numpy as np
import pytest

from siamese_cli.errors import SiameseError
from siamese_cli.io.prototxt import parse_text
from siamese_cli.progress import Progress
from siamese_cli.proto import caffe_pb2
from siamese_cli.solvers import NonFiniteError, make_solver, snapshot
from test_solver import NET, Lines

VARYING = NET.replace('data_filler { type: "constant" value: 0.5 } data_filler { type: "constant" value: -0.25 }',
                      'data_filler { type: "gaussian" std: 1 }')


def make(tmp_path, extra="", **kwargs):
    text = (f'net_param {{ {VARYING} }}\nbase_lr: 0.1\nlr_policy: "fixed"\nmomentum: 0.9\nmax_iter: 6\n'
            f'random_seed: 3\nsnapshot_prefix: "{tmp_path}/t"\n{extra}')
    return make_solver(parse_text(text, caffe_pb2.SolverParameter()), log=kwargs.pop("log", Lines()), **kwargs)


def pairs(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".caffemodel", ".solverstate"))


# ---- non-finite losses -------------------------------------------------------------------------------
def test_nan_loss_stops_naming_iteration_and_first_layer_and_keeps_last_snapshot(tmp_path):
    solver = make(tmp_path, "snapshot: 1")
    solver.step(2)
    assert pairs(tmp_path) == ["t_iter_1.caffemodel", "t_iter_1.solverstate",
                               "t_iter_2.caffemodel", "t_iter_2.solverstate"]
    solver.net.params["ip_p"][0].data[1, 2] = np.nan  # the second tower goes first in nothing but its output
    with pytest.raises(NonFiniteError) as caught:
        solver.step(1)
    message = str(caught.value)
    assert message.startswith('iteration 2: the loss is nan; the first non-finite output is top "b" of layer '
                              '"ip_p" (InnerProduct). Training stopped; the last good snapshot is '
                              f"{tmp_path}/t_iter_2.solverstate.")
    assert "\n" not in message and caught.value.exit_code == 3
    assert solver.iter == 2 and len(pairs(tmp_path)) == 4  # nothing new written


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_allow_nan_trains_on_as_caffe(tmp_path):
    solver = make(tmp_path, allow_nan=True)
    solver.net.params["ip"][0].data[0, 0] = np.inf
    solver.step(2)
    assert solver.iter == 2 and np.isnan(solver.smoothed_loss)
    solver.snapshot()  # Caffe snapshots whatever the weights hold
    assert "t_iter_2.solverstate" in pairs(tmp_path)


def test_non_finite_weights_are_never_snapshotted(tmp_path):
    solver = make(tmp_path)
    solver.net.params["ip"][1].data[0] = np.inf
    with pytest.raises(NonFiniteError, match='iteration 0: blob 1 of layer "ip" holds NaN or inf'):
        solver.snapshot()
    assert pairs(tmp_path) == []


# ---- the snapshot folder and the disk ---------------------------------------------------------------
def test_unwritable_snapshot_prefix_is_refused_before_iteration_0(tmp_path):
    (tmp_path / "blocker").write_text("a file where the folder should be")
    log = Lines()
    solver = make(tmp_path, "snapshot: 2", log=log)
    solver.param.snapshot_prefix = str(tmp_path / "blocker" / "run" / "t")
    with pytest.raises(SiameseError, match=r"blocker/run/t_iter_0\.caffemodel: cannot write: .*blocker is a file, "
                                           r"not a folder"):
        solver.solve(handle_signals=False)
    assert solver.iter == 0 and not any("Iteration" in line for line in log.lines)


def test_missing_snapshot_prefix_is_refused_before_iteration_0(tmp_path):
    solver = make(tmp_path, "snapshot: 2")
    solver.param.ClearField("snapshot_prefix")
    with pytest.raises(SiameseError, match="no snapshot_prefix but snapshot is set"):
        solver.solve(handle_signals=False)
    assert solver.iter == 0


@pytest.mark.parametrize("failing", [".caffemodel", ".solverstate"])
def test_full_disk_during_a_snapshot_keeps_the_previous_pair(tmp_path, monkeypatch, failing):
    solver = make(tmp_path, "snapshot: 2")
    solver.step(2)
    real = snapshot._write_synced

    def full_disk(path, payload):
        if f"t_iter_4{failing}." in str(path):  # the temporary file beside the target
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, payload)

    monkeypatch.setattr(snapshot, "_write_synced", full_disk)
    with pytest.raises(SiameseError) as caught:
        solver.step(2)
    assert str(caught.value) == f"{tmp_path}/t_iter_4{failing}: cannot write: No space left on device; free some space"
    assert not isinstance(caught.value, NonFiniteError) and caught.value.exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t_iter_2.caffemodel", "t_iter_2.solverstate"]


# ---- the --log file ---------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_log_appends_on_resume_and_starts_afresh_otherwise(tmp_path, suffix):
    log_path = tmp_path / f"run{suffix}"
    extra = "snapshot: 3\ndisplay: 1\ntest_iter: 1\ntest_interval: 3\ntest_net_param { " + VARYING + " }"
    make(tmp_path, extra, log_path=log_path).solve(handle_signals=False)  # 6 iterations, snapshots at 3 and 6
    straight = log_path.read_text().splitlines(keepends=True)

    def key(line):
        if line.startswith("phase,"):
            return line
        if suffix == ".csv":
            return tuple(line.split(",")[:3])
        return re.sub(r'"value": [^}]*', "", line)

    def iteration(line):
        return -1 if line.startswith("phase,") else (
            int(line.split(",")[1]) if suffix == ".csv" else json.loads(line)["iter"])

    before_3 = [line for line in straight if iteration(line) < 3]
    assert 0 < len(before_3) < len(straight)
    resumed = make(tmp_path, extra, log_path=log_path)
    resumed.restore(tmp_path / "t_iter_3.solverstate")  # as if killed after iteration 5, resumed from 3
    resumed.solve(handle_signals=False)
    lines = log_path.read_text().splitlines(keepends=True)
    assert lines[:len(before_3)] == before_3  # kept as they were
    assert [key(line) for line in lines] == [key(line) for line in straight]  # rows from 3 on written once
    assert (lines[0] == "phase,iter,name,value\n") == (suffix == ".csv")

    make(tmp_path, extra, log_path=log_path).solve(handle_signals=False)  # a fresh run starts anew
    assert [key(line) for line in log_path.read_text().splitlines(keepends=True)] == [key(line) for line in straight]


def test_log_write_failure_names_the_file(tmp_path):
    if not __import__("os").path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    solver = make(tmp_path, "snapshot_after_train: false", log_path="/dev/full")
    with pytest.raises(SiameseError, match=r"^/dev/full: cannot write: No space left on device; free some space$"):
        solver.solve(handle_signals=False)


# ---- interrupted test passes and resumed rates ---------------------------------------------------------
def test_interrupted_test_pass_logs_test_interrupted_and_nothing_else(tmp_path):
    log = Lines()
    solver = make(tmp_path, "test_iter: 5\ntest_interval: 2\nsnapshot_after_train: false\ntest_net_param { "
                  + VARYING + " }", log=log, log_path=tmp_path / "run.csv")
    net = solver.test_nets[0]
    forward, calls = net.forward_loss, []

    def forward_then_ctrl_c():
        calls.append(1)
        if len(calls) == 2:
            solver.requested = "stop"  # what the SIGINT handler does
        return forward()

    net.forward_loss = forward_then_ctrl_c
    solver.solve(handle_signals=False)
    assert log.lines[-3:-1] == ["Test interrupted.", "Optimization stopped early."]
    assert log.lines[-1].startswith("Time: ")
    assert not any("Test net output" in line or "Test loss" in line for line in log.lines)
    assert (tmp_path / "run.csv").read_text() == "phase,iter,name,value\n"
    assert solver.iter == 0 and len(calls) == 2


def test_first_rate_line_after_a_resume_counts_from_the_resume(tmp_path):
    make(tmp_path, "snapshot: 7\nmax_iter: 7").solve(handle_signals=False)
    log = Lines()
    resumed = make(tmp_path, "display: 5\nmax_iter: 12\nsnapshot_after_train: false", log=log)
    resumed.restore(tmp_path / "t_iter_7.solverstate")
    resumed.solve(handle_signals=False)
    (line,) = [line for line in log.lines if re.match(r"Iteration 10 \(", line)]
    per_s, lapse, span = re.match(r"Iteration 10 \(([\d.e+-]+) iter/s, ([\d.e+-]+)s/(\d+) iters\)", line).groups()
    assert span == "3" and float(per_s) * float(lapse) == pytest.approx(3, rel=1e-3)


def test_progress_rate_and_eta_measure_from_the_resume():
    now = [100.0]
    bar = Progress(2000, "train", enabled=False, initial=400, clock=lambda: now[0])
    now[0] += 10.0
    bar.update(100)
    rate, eta = bar.rate_eta()
    assert bar.done == 500 and rate == pytest.approx(10.0) and eta == pytest.approx(150.0)


# ---- stops, and the command line around them -----------------------------------------------------------
def stop_after(solver, calls):
    """Make the train net ask for a stop (as SIGTERM's handler does) after `calls` forward passes."""
    forward, count = solver.net.forward_backward, []

    def forward_then_stop():
        count.append(1)
        if len(count) == calls:
            solver.requested, solver.stop_signal = "stop", 15
        return forward()

    solver.net.forward_backward = forward_then_stop


@pytest.mark.parametrize("on_stop", [False, True])
def test_snapshot_after_train_false_keeps_caffes_meaning_unless_snapshot_on_stop(tmp_path, on_stop):
    log = Lines()
    solver = make(tmp_path, "snapshot_after_train: false\nmax_iter: 100", log=log, snapshot_on_stop=on_stop)
    stop_after(solver, 3)
    solver.solve(handle_signals=False)
    assert solver.iter == 3 and log.lines[-2] == "Optimization stopped early."
    assert pairs(tmp_path) == (["t_iter_3.caffemodel", "t_iter_3.solverstate"] if on_stop else [])


def test_cli_full_disk_is_exit_2_naming_the_file_and_the_pair_to_resume_from(tmp_path, monkeypatch, capsys):
    from siamese_cli.cli import main

    solver_path = tmp_path / "solver.prototxt"
    solver_path.write_text(f'net_param {{ {VARYING} }}\nbase_lr: 0.1\nlr_policy: "fixed"\nmax_iter: 6\n'
                           f'random_seed: 3\nsnapshot: 2\nsnapshot_prefix: "{tmp_path}/t"\n')
    real = snapshot._write_synced

    def full_disk(path, payload):
        if "t_iter_4.solverstate." in str(path):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, payload)

    monkeypatch.setattr(snapshot, "_write_synced", full_disk)
    assert main(["train", "--solver", str(solver_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == (f"error: {tmp_path}/t_iter_4.solverstate: cannot write: No space left on device; free some "
                       f"space; resume from the last complete snapshot with: siamese train --solver {solver_path} "
                       f"--snapshot {tmp_path}/t_iter_2.solverstate")
    assert pairs(tmp_path) == ["t_iter_2.caffemodel", "t_iter_2.solverstate"]


def test_zero_iterations_refused_with_a_message(capsys):
    from siamese_cli.cli import main

    with pytest.raises(SystemExit) as caught:
        main(["test", "-model", "net.prototxt", "-weights", "w.caffemodel", "-iterations", "0"])
    assert caught.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "siamese test: error: argument --iterations/-iterations: must be at least 1, got 0")


def test_lmdb_versus_leveldb_hint_names_no_flag_train_lacks(tmp_path):
    from siamese_cli.io.db import open_reader
    from siamese_cli.tools.create_db import create_pair_db
    from test_resume import write_idx

    images, labels = write_idx(tmp_path, count=4)
    create_pair_db(images, labels, tmp_path / "pairs", backend="lmdb")
    with pytest.raises(SiameseError) as caught:
        open_reader(tmp_path / "pairs", "leveldb")
    assert "set backend: LMDB in data_param" in str(caught.value) and "--backend" not in str(caught.value)


def test_missing_test_net_names_the_solver_line_that_names_it(tmp_path):
    from siamese_cli.solvers import load_solver

    (tmp_path / "here.prototxt").write_text(VARYING)
    solver_path = tmp_path / "solver.prototxt"
    solver_path.write_text(f'train_net_param {{ {VARYING} }}\ntest_net: "{tmp_path}/here.prototxt"\n'
                           f'test_net: "{tmp_path}/gone.prototxt"\ntest_iter: 1\ntest_iter: 1\nbase_lr: 0.1\n')
    line = solver_path.read_text().splitlines().index(f'test_net: "{tmp_path}/gone.prototxt"') + 1
    with pytest.raises(SiameseError) as caught:
        load_solver(solver_path, log=Lines())
    assert str(caught.value).startswith(f"{tmp_path}/gone.prototxt: no such file, named by test_net in "
                                        f"{solver_path}:{line}; ")


def test_solverstate_whose_learned_net_is_not_text_is_a_clear_error(tmp_path):
    solver = make(tmp_path)
    solver.snapshot()
    state = next(tmp_path.glob("*.solverstate"))
    state.write_bytes(state.read_bytes() + b"\x12\x02\xff\xfe")  # a later learned_net wins: not UTF-8
    with pytest.raises(SiameseError, match="learned_net is not a valid file name"):
        solver.restore(state)


def test_non_finite_loss_is_the_one_message_no_numpy_warnings(tmp_path):
    """The stop message says what happened; numpy's own overflow warnings would only repeat it, unordered."""
    solver = make(tmp_path)
    solver.net.params["ip_p"][0].data[...] = np.float32(3e38)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(NonFiniteError):
            solver.step(1)
    assert [str(w.message) for w in seen if issubclass(w.category, RuntimeWarning)] == []
