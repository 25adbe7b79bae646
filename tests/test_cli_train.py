"""`siamese train`, `test` and `time` end to end on a tiny net, as a user runs them."""
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

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


def test_sighup_snapshots_and_sigterm_snapshots_and_stops(tmp_path):
    solver = write_files(tmp_path, max_iter=10_000_000, extra="test_interval: 0\nsnapshot_after_train: false\n")
    process = subprocess.Popen([sys.executable, "-m", "siamese_cli", "train", "--solver", str(solver)],
                               stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for line in process.stderr:
        if "lr = " in line:
            break
    process.send_signal(signal.SIGHUP)  # snapshot and go on
    for line in process.stderr:
        if "Snapshotting solver state" in line:
            break
    for line in process.stderr:  # training goes on after the SIGHUP snapshot
        if "lr = " in line:
            break
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=60) == 0
    assert "Optimization stopped early." in rest
    snapshots = sorted(tmp_path.glob("tiny_iter_*.solverstate"))
    assert len(snapshots) == 2  # one for SIGHUP, one for SIGTERM
    state = caffe_pb2.SolverState()
    state.ParseFromString(max(snapshots, key=lambda p: int(p.stem.split("_")[-1])).read_bytes())
    assert 0 < state.iter < 10_000_000 and state.learned_net.endswith(f"tiny_iter_{state.iter}.caffemodel")


def test_weights_and_snapshot_together_is_an_error(tmp_path):
    solver = write_files(tmp_path)
    result = run("train", "--solver", solver, "--weights", "a.caffemodel", "--snapshot", "b.solverstate")
    assert result.returncode == 2 and result.stderr.startswith("error: train: give --weights or --snapshot")
