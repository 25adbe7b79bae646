"""SIGKILL in the middle of a snapshot, then resume from what is on disk: the newest .solverstate always
has its complete .caffemodel, and training goes on from it."""
import os
import random
import subprocess
import sys
import time

from siamese_cli.proto import caffe_pb2
from test_cli_train import ROOT, read_until, run, write_files


def start(solver, *flags, pause=None):
    env = dict(os.environ)
    if pause is not None:
        env["SIAMESE_TEST_SNAPSHOT_PAUSE"] = str(pause)
    return subprocess.Popen([sys.executable, "-m", "siamese_cli", "train", "--solver", str(solver),
                             *map(str, flags)], stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


def iteration(path):
    return int(path.stem.split("_")[-1])


def complete_pairs(tmp_path):
    """Every .solverstate on disk parses and names a .caffemodel that parses; their iterations, in order."""
    found = []
    for state_path in tmp_path.glob("tiny_iter_*.solverstate"):
        state = caffe_pb2.SolverState()
        state.ParseFromString(state_path.read_bytes())
        assert state.iter == iteration(state_path)
        model = caffe_pb2.NetParameter()
        model.ParseFromString((tmp_path / os.path.basename(state.learned_net)).read_bytes())
        blobs = [(layer.name, len(layer.blobs[0].data)) for layer in model.layer if layer.blobs]
        assert blobs == [("ip", 8), ("ip_p", 8)]  # shared weights saved with each layer, as Caffe does
        found.append(state.iter)
    return sorted(found)


def kill(process):
    process.kill()
    process.wait(timeout=30)
    process.stderr.close()


def test_kill_between_the_two_files_of_a_snapshot_then_resume(tmp_path):
    solver = write_files(tmp_path, max_iter=10_000_000, extra="snapshot: 5\ntest_interval: 0\n")
    process = start(solver, pause=0.5)
    read_until(process, "tiny_iter_10.solverstate")  # logged just before the pair is written
    model = tmp_path / "tiny_iter_10.caffemodel"
    deadline = time.monotonic() + 10
    while not model.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert model.exists()
    kill(process)  # the .caffemodel is in place, its .solverstate is not
    assert not (tmp_path / "tiny_iter_10.solverstate").exists()
    assert complete_pairs(tmp_path) == [5]
    result = run("train", "--solver", solver, "--snapshot", tmp_path / "tiny_iter_5.solverstate", "--max-iter", 12)
    assert result.returncode == 0, result.stderr
    assert complete_pairs(tmp_path) == [5, 10, 12]


def test_kill_at_random_times_always_leaves_a_pair_to_resume_from(tmp_path):
    solver = write_files(tmp_path, max_iter=10_000_000, extra="snapshot: 1\ntest_interval: 0\ndisplay: 0\n")
    draw = random.Random(7)
    resume = []
    for _ in range(2):
        process = start(solver, *resume)
        read_until(process, "Snapshotting solver state")  # past start-up, in the middle of the snapshots
        time.sleep(draw.uniform(0, 0.2))
        kill(process)
        pairs = complete_pairs(tmp_path)
        assert pairs and (not resume or pairs[-1] >= iteration(resume[1]))
        resume = ["--snapshot", tmp_path / f"tiny_iter_{pairs[-1]}.solverstate"]
    last = iteration(resume[1])
    result = run("train", "--solver", solver, *resume, "--max-iter", last + 2)
    assert result.returncode == 0, result.stderr
    assert complete_pairs(tmp_path)[-1] == last + 2
