"""`siamese train`, `test` and `time` end to end on a tiny net, as a user runs them."""
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from siamese_cli.net import Net
from siamese_cli.proto import caffe_pb2

ROOT = Path(__file__).resolve().parents[1]

NET = """name: "tiny"
layer { name: "data" type: "DummyData" top: "x" top: "y" top: "sim"
  dummy_data_param { shape { dim: 8 dim: 4 } shape { dim: 8 dim: 4 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "gaussian" std: 1 }
    data_filler { type: "constant" value: 0 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" } param { name: "b" }
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "ip_p" type: "InnerProduct" bottom: "y" top: "b" param { name: "w" } param { name: "b" }
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "sim" top: "loss" }
"""


def write_files(tmp_path, max_iter=20, extra=""):
    (tmp_path / "net.prototxt").write_text(NET)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{tmp_path}/net.prototxt"\nbase_lr: 0.01\nlr_policy: "fixed"\nmomentum: 0.9\n'
                      f'display: 10\nmax_iter: {max_iter}\nrandom_seed: 1\nsnapshot_prefix: "{tmp_path}/tiny"\n'
                      f"test_iter: 2\ntest_interval: 10\n{extra}")
    return solver


def run(*args):
    return subprocess.run([sys.executable, "-m", "siamese_cli", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT)


def test_train_then_test_then_time(tmp_path):
    solver = write_files(tmp_path)
    result = run("train", "--solver", solver, "--log", tmp_path / "log.jsonl")
    assert result.returncode == 0, result.stderr
    assert "Optimization Done." in result.stderr
    assert (tmp_path / "tiny_iter_20.caffemodel").exists() and (tmp_path / "tiny_iter_20.solverstate").exists()
    assert '"phase": "test"' in (tmp_path / "log.jsonl").read_text()

    result = run("test", "--model", tmp_path / "net.prototxt", "--weights", tmp_path / "tiny_iter_20.caffemodel",
                 "--iterations", 3)
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    name, value = line.split(" = ", 1)
    assert name == "loss" and float(value.split()[0]) > 0

    result = run("time", "--model", tmp_path / "net.prototxt", "--iterations", 2)
    assert result.returncode == 0, result.stderr
    assert "ip_p\tforward:" in result.stdout and "Average Forward-Backward:" in result.stdout


def test_weights_fine_tune_starts_from_given_weights(tmp_path):
    solver = write_files(tmp_path, max_iter=0, extra="snapshot_after_train: true\n")
    net = Net(tmp_path / "net.prototxt", phase="TRAIN", seed=9)
    net.params["ip"][0].data[...] = 0.5
    net.save(tmp_path / "start.caffemodel")
    result = run("train", "--solver", solver, "--weights", tmp_path / "start.caffemodel")
    assert result.returncode == 0, result.stderr
    saved = caffe_pb2.NetParameter()
    saved.ParseFromString((tmp_path / "tiny_iter_0.caffemodel").read_bytes())
    assert np.allclose(saved.layer[1].blobs[0].data, 0.5)


def start_train(solver, *flags):
    return subprocess.Popen([sys.executable, "-m", "siamese_cli", "train", "--solver", str(solver), *map(str, flags)],
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def read_until(process, text):
    for line in process.stderr:
        if text in line:
            return line
    raise AssertionError(f"the run ended before logging {text!r}")


def newest_state(tmp_path):
    return max(tmp_path.glob("tiny_iter_*.solverstate"), key=lambda p: int(p.stem.split("_")[-1]))


def test_sighup_snapshots_and_goes_on_sigterm_stops_with_143(tmp_path):
    # snapshot_after_train: false keeps Caffe's meaning: the stop itself writes nothing
    solver = write_files(tmp_path, max_iter=10_000_000, extra="test_interval: 0\nsnapshot_after_train: false\n")
    process = start_train(solver)
    read_until(process, "lr = ")
    process.send_signal(signal.SIGHUP)  # snapshot and go on
    read_until(process, "Snapshotting solver state")
    read_until(process, "lr = ")  # training goes on after the SIGHUP snapshot
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 143
    assert "Optimization stopped early." in rest
    snapshots = list(tmp_path.glob("tiny_iter_*.solverstate"))
    assert len(snapshots) == 1  # the SIGHUP one
    assert f"Stopped by signal; resume with: siamese train --solver {solver} --snapshot {snapshots[0]}\n" in rest


def test_sigint_snapshots_exits_130_and_the_printed_command_resumes(tmp_path):
    solver = write_files(tmp_path, max_iter=10_000_000, extra="test_interval: 0\n")
    process = start_train(solver, "--log", tmp_path / "run.csv")
    read_until(process, "lr = ")
    process.send_signal(signal.SIGINT)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 130
    state = newest_state(tmp_path)
    stopped_at = int(state.stem.split("_")[-1])
    (command,) = [line.split("resume with: ", 1)[1] for line in rest.splitlines() if "resume with: " in line]
    words = shlex.split(command)
    assert words[:2] == ["siamese", "train"] and words[words.index("--snapshot") + 1] == str(state)
    result = run(*words[1:], "--max-iter", stopped_at + 5)
    assert result.returncode == 0, result.stderr
    assert f"Restoring previous solver status from {state}" in result.stderr
    assert (tmp_path / f"tiny_iter_{stopped_at + 5}.solverstate").exists()
    rows = (tmp_path / "run.csv").read_text().splitlines()
    assert rows.count("phase,iter,name,value") == 1 and rows[-1].startswith(f"train,{stopped_at + 4},")


NAN_NET = NET.replace('data_filler { type: "constant" value: 0 }', 'data_filler { type: "constant" value: 1 }')


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_infinite_loss_exits_3_and_allow_nan_trains_on(tmp_path):
    solver = write_files(tmp_path, max_iter=6, extra="base_lr: 1e30\nsnapshot: 1\ntest_interval: 0\ndisplay: 1\n")
    (tmp_path / "net.prototxt").write_text(NAN_NET)  # similar pairs: the loss grows with the weights
    result = run("train", "--solver", solver)
    assert result.returncode == 3, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert re.match(r'error: iteration \d: the loss is inf; the first non-finite output is top "loss" of layer '
                    r'"loss" \(ContrastiveLoss\)\. Training stopped; the last good snapshot is .*tiny_iter_\d\.'
                    r'solverstate\.', line)
    assert "Traceback" not in result.stderr
    result = run("train", "--solver", solver, "--allow-nan")
    assert result.returncode == 0, result.stderr
    assert "loss = inf" in result.stderr or "loss = nan" in result.stderr


def main_run(capsys, *args):
    """`siamese ARGS` in this process (faster than a subprocess): (exit status, stderr)."""
    from siamese_cli.cli import main

    status = main([str(a) for a in args])
    return status, capsys.readouterr().err


def test_caffe_flag_spellings_and_debug_after_the_command(tmp_path, capsys):
    solver = write_files(tmp_path, max_iter=2)
    status, err = main_run(capsys, "train", "-solver", solver, "-gpu", "0")
    assert status == 0, err
    assert err.startswith("note: -gpu 0 ignored: this toolkit computes on the CPU\n")
    status, err = main_run(capsys, "test", "-model", tmp_path / "net.prototxt", "-weights",
                           tmp_path / "tiny_iter_2.caffemodel", "-iterations", 2, "-gpu", "all")
    assert status == 0, err
    status, err = main_run(capsys, "train", "-solver", tmp_path / "missing.prototxt", "--debug")
    assert status == 2 and "Traceback" in err
    assert err.rstrip().endswith("missing.prototxt: no such file; check the path (relative paths start at "
                                 "the working directory)")


@pytest.mark.parametrize("command", ["test", "time"])
@pytest.mark.parametrize("count", ["0", "-3"])
def test_iterations_must_be_positive(tmp_path, command, count):
    from siamese_cli.cli import main

    with pytest.raises(SystemExit) as caught:
        main([command, "--model", "net.prototxt", "--weights", "w.caffemodel", "--iterations", count])
    assert caught.value.code == 2


def test_net_file_named_by_the_solver_says_so(tmp_path, capsys):
    solver = tmp_path / "solver.prototxt"
    solver.write_text('base_lr: 0.1\nlr_policy: "fixed"\n# the net:\nnet: "nowhere/net.prototxt"\n')
    status, err = main_run(capsys, "train", "--solver", solver)
    assert status == 2
    assert err.splitlines(keepends=True)[-1] == (f"error: nowhere/net.prototxt: no such file, named by net in "
                                                 f"{solver}:4; check the path (relative paths start at the "
                                                 f"working directory)\n")


def test_log_on_a_full_device_is_a_clear_error(tmp_path, capsys):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    solver = write_files(tmp_path, max_iter=2)
    status, err = main_run(capsys, "train", "--solver", solver, "--log", "/dev/full")
    assert status == 2
    assert err.splitlines()[-1] == "error: /dev/full: cannot write: No space left on device; free some space"


def test_weights_and_snapshot_together_is_an_error(tmp_path):
    solver = write_files(tmp_path)
    result = run("train", "--solver", solver, "--weights", "a.caffemodel", "--snapshot", "b.solverstate")
    assert result.returncode == 2 and result.stderr.startswith("error: train: give --weights or --snapshot")
