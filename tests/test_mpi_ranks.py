"""`mpiexec -n 2 siamese train`: the example siamese net on 2 ranks against one process.

Needs the `mpi` extra (mpi4py and MPICH's mpiexec, installed by scripts/setup.sh test).
Every run has a timeout, so a hang fails the test instead of stalling the suite.
"""
import contextlib
import gzip
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py")

from siamese_cli.data import load_mnist  # noqa: E402
from siamese_cli.io.prototxt import parse_text, read_net  # noqa: E402
from siamese_cli.log import CaffeLog  # noqa: E402
from siamese_cli.net import Net  # noqa: E402
from siamese_cli.proto import caffe_pb2  # noqa: E402
from siamese_cli.solvers import make_solver  # noqa: E402
from siamese_cli.tools.create_db import create_pair_db  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MPIEXEC = Path(sys.executable).parent / "mpiexec"
WORKER = Path(__file__).parent / "mpi_worker.py"
pytestmark = pytest.mark.skipif(not MPIEXEC.exists(), reason="no mpiexec beside the Python (the mpi extra)")

SOLVER = """
net_param {{ {net} }}
test_iter: 4
test_interval: 10
base_lr: 0.01
momentum: 0.9
lr_policy: "inv" gamma: 0.0001 power: 0.75
display: 10
max_iter: {max_iter}
snapshot: 10
snapshot_prefix: "{prefix}"
random_seed: 3
"""


def write_idx(folder, images, labels):
    image_path, label_path = folder / "images.idx.gz", folder / "labels.idx"
    image_path.write_bytes(gzip.compress(struct.pack(">IIII", 2051, *images.shape) + images.tobytes()))
    label_path.write_bytes(struct.pack(">II", 2049, len(labels)) + labels.tobytes())
    return image_path, label_path


@pytest.fixture(scope="module")
def dbs(tmp_path_factory):
    """1,000 train pairs (20 iterations of 64 wrap around it) and 400 test pairs from the bundled MNIST."""
    folder = tmp_path_factory.mktemp("mpi_dbs")
    images, labels = load_mnist("test")
    train = create_pair_db(*write_idx(folder, images[:1000], labels[:1000]), folder / "train", seed=0)
    test_folder = folder / "t"
    test_folder.mkdir()
    create_pair_db(*write_idx(test_folder, images[1000:1400], labels[1000:1400]), folder / "test", seed=1)
    assert train == 1000
    return folder / "train", folder / "test"


def solver_text(dbs, batch, prefix, max_iter=20):
    """The example solver and net (ROOT/examples/siamese), on the small DBs, train batch `batch`, test batch 50."""
    net = read_net(ROOT / "examples/siamese/mnist_siamese_train_test.prototxt")
    for layer in net.layer:
        if layer.type == "Data":
            test = layer.include[0].phase == caffe_pb2.TEST
            layer.data_param.source = str(dbs[1] if test else dbs[0])
            layer.data_param.batch_size = 50 if test else batch
    return SOLVER.format(net=str(net), max_iter=max_iter, prefix=prefix)


def single_process(dbs, tmp_path, max_iter=20, restore=None):
    """One process, batch 64: the reference."""
    param = parse_text(solver_text(dbs, 64, tmp_path / "one", max_iter), caffe_pb2.SolverParameter())
    param.snapshot = 0
    param.snapshot_after_train = False
    lines = []
    log = CaffeLog(_Lines(lines))
    solver = make_solver(param, log=log)
    if restore:
        solver.restore(restore)
    solver.solve(handle_signals=False)
    weights = np.concatenate([p.blob.data.ravel() for p in solver.net.learnable_params])
    return weights, "".join(lines)


class _Lines:
    def __init__(self, lines):
        self.lines = lines

    def write(self, text):
        self.lines.append(text)

    def flush(self):
        pass

    def isatty(self):
        return False


def mpiexec(tmp_path, args, ranks=2, timeout=120, env=None, wait=True):
    environment = dict(os.environ, OPENBLAS_NUM_THREADS="1", SIAMESE_TEST_OUT=str(tmp_path), **(env or {}))
    command = [str(MPIEXEC), "-n", str(ranks), sys.executable, str(WORKER), "train", *args]
    process = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    if not wait:
        return process
    return finish(process, timeout)


def finish(process, timeout):
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"the MPI job did not end within {timeout} s (a hang)")
    return process.returncode, out + err


def rounding_tolerance(reference):
    """How far two runs may drift apart when only the summation order of their gradients differs.

    Each gradient element is a float32 sum over the 64 pairs (for the convolutions, also over image
    positions); one process adds the 64 in one order, 2 ranks add 32 each and then the halves.
    Reordering a sum of n float32 terms changes it by at most about n * eps of the sum of the
    magnitudes (eps = 2^-23), so a step differs by at most ~64 eps relative, and 20 steps of
    lr 0.01 move the weights by a fraction of their size: 64 eps of the largest weight bounds the
    gap. Measured: 3.7e-8 (one ulp at 0.5, the largest weight); the bound is 3.9e-6, and the
    broken variants tried give 1e-2 and more (no record filter: 0.011; no 1/N: 0.030).
    """
    return 64 * np.finfo(np.float32).eps * np.abs(reference).max()


@pytest.fixture(scope="module")
def reference(dbs, tmp_path_factory):
    """Weights and log of one process, batch 64, 20 iterations."""
    return single_process(dbs, tmp_path_factory.mktemp("one"))


@pytest.fixture(scope="module")
def two_ranks(dbs, tmp_path_factory):
    """`mpiexec -n 2 siamese train`, batch 32, 20 iterations: (folder, exit status, log)."""
    folder = tmp_path_factory.mktemp("two")
    (folder / "solver.prototxt").write_text(solver_text(dbs, 32, folder / "s"))
    code, log = mpiexec(folder, ["--solver", "solver.prototxt", "--log", "run.csv"])
    return folder, code, log


def test_two_ranks_train_as_one_process_of_twice_the_batch(two_ranks, reference):
    folder, code, log = two_ranks
    assert code == 0, log
    ranks = [np.load(folder / f"weights_rank{r}.npy") for r in range(2)]
    np.testing.assert_array_equal(ranks[0], ranks[1])  # every rank holds the same bits
    gap = np.abs(ranks[0] - reference[0]).max()
    assert gap <= rounding_tolerance(reference[0]), gap


def test_one_log_and_one_snapshot(two_ranks):
    folder, code, log = two_ranks
    assert code == 0, log
    assert log.count("Using 2 MPI ranks") == 1 and log.count("Solving ") == 1, log
    lanes = os.environ.get("SIAMESE_BRANCH_THREADS") or max(1, (os.cpu_count() or 1) // 2)  # two ranks share a host
    assert f"x batch_size, {lanes} branch lane(s) per rank" in log, log
    assert log.count("Snapshotting to binary proto file") == 2
    names = sorted(p.name for p in folder.iterdir() if p.name.startswith("s_iter"))
    assert names == ["s_iter_10.caffemodel", "s_iter_10.solverstate", "s_iter_20.caffemodel", "s_iter_20.solverstate"]
    snapshot = Net(str(ROOT / "examples/siamese/mnist_siamese.prototxt"), weights=str(folder / "s_iter_20.caffemodel"))
    values = np.concatenate([p.blob.data.ravel() for p in snapshot.learnable_params])
    np.testing.assert_array_equal(values, np.load(folder / "weights_rank0.npy")[:values.size])


def test_logged_losses_are_those_of_one_process(two_ranks, reference):
    """At iteration 0 both runs hold the same weights (rank 0's seed is the solver's): the data-parallel
    test pass (each rank 2 batches of 50, half of the 200 test pairs) and the train loss (the mean of the
    ranks' halves) give one process's numbers."""
    folder, code, log = two_ranks
    assert code == 0, log
    rows = [line.split(",") for line in (folder / "run.csv").read_text().splitlines()[1:]]
    test_loss = next(float(v) for phase, it, name, v in rows if (phase, it, name) == ("test", "0", "loss"))
    one = float(re.search(r"Iteration 0, Testing net.*?loss = ([0-9.e-]+)", reference[1], re.S).group(1))
    assert test_loss == pytest.approx(one, rel=1e-5)
    train_loss = next(float(v) for phase, it, name, v in rows if (phase, it, name) == ("train", "0", "loss"))
    one = float(re.search(r"Iteration 0 \(.*loss = ([0-9.e-]+)", reference[1]).group(1))
    assert train_loss == pytest.approx(one, rel=1e-5)


def test_resume_with_another_rank_count(dbs, tmp_path, two_ranks, reference):
    """A 2-rank snapshot resumed in 1 process, and a 1-process snapshot resumed on 2 ranks, both reach the
    20-iteration weights of one process."""
    resumed_on_one, _ = single_process(dbs, tmp_path, restore=two_ranks[0] / "s_iter_10.solverstate")
    assert np.abs(resumed_on_one - reference[0]).max() <= rounding_tolerance(reference[0])

    param = parse_text(solver_text(dbs, 64, tmp_path / "one", max_iter=10), caffe_pb2.SolverParameter())
    make_solver(param, log=CaffeLog(_Lines([]))).solve(handle_signals=False)
    (tmp_path / "solver.prototxt").write_text(solver_text(dbs, 32, tmp_path / "s"))
    code, log = mpiexec(tmp_path, ["--solver", "solver.prototxt", "--snapshot", "one_iter_10.solverstate"])
    assert code == 0, log
    resumed_on_two = np.load(tmp_path / "weights_rank0.npy")
    assert np.abs(resumed_on_two - reference[0]).max() <= rounding_tolerance(reference[0])


def test_a_rank_that_raises_ends_the_job(dbs, tmp_path):
    (tmp_path / "solver.prototxt").write_text(solver_text(dbs, 32, tmp_path / "s", max_iter=1000))
    start = time.monotonic()
    code, log = mpiexec(tmp_path, ["--solver", "solver.prototxt"], timeout=60, env={"SIAMESE_TEST_FAIL": "1:3"})
    assert code != 0
    assert "error: rank 1 of 2: internal error: RuntimeError: test failure injected at iteration 3; " \
           "ending all 2 ranks" in log
    assert time.monotonic() - start < 60


def test_a_killed_rank_ends_the_job_and_the_last_snapshot_loads(dbs, tmp_path):
    (tmp_path / "solver.prototxt").write_text(solver_text(dbs, 32, tmp_path / "s", max_iter=100000))
    process = mpiexec(tmp_path, ["--solver", "solver.prototxt"], wait=False)
    deadline = time.monotonic() + 60
    while not (tmp_path / "s_iter_10.solverstate").exists() or not (tmp_path / "pid1").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no snapshot at iteration 10: {finish(process, 1)}")
        time.sleep(0.1)
    try:
        os.kill(int((tmp_path / "pid1").read_text()), signal.SIGKILL)
    except ProcessLookupError:
        pytest.fail(f"rank 1 ended before it was killed: {finish(process, 60)}")
    code, log = finish(process, timeout=60)
    assert code != 0, log
    last = max(tmp_path.glob("s_iter_*.solverstate"), key=lambda p: int(re.search(r"_(\d+)\.", p.name).group(1)))
    param = parse_text(solver_text(dbs, 32, tmp_path / "r"), caffe_pb2.SolverParameter())
    solver = make_solver(param, log=CaffeLog(_Lines([])))
    solver.restore(last)
    assert solver.iter >= 10
    solver.close()


def test_ctrl_c_stops_every_rank_on_one_iteration(dbs, tmp_path):
    """SIGINT to mpiexec reaches each rank at a different point; they agree at the next reduction, stop
    on the same iteration with one snapshot, and keep identical weights; exit status 130 as in one process."""
    (tmp_path / "solver.prototxt").write_text(solver_text(dbs, 32, tmp_path / "s", max_iter=100000))
    process = mpiexec(tmp_path, ["--solver", "solver.prototxt"], wait=False)
    deadline = time.monotonic() + 60
    while not (tmp_path / "s_iter_10.solverstate").exists():
        if process.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no snapshot at iteration 10: {finish(process, 1)}")
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    code, log = finish(process, timeout=60)
    assert code == 130, log
    assert log.count("Optimization stopped early.") == 1
    stopped = int(re.search(r"resume with: .* --snapshot \S+_iter_(\d+)\.solverstate", log).group(1))
    assert stopped > 10 and (tmp_path / f"s_iter_{stopped}.solverstate").exists()
    assert log.count(f"Snapshotting to binary proto file {tmp_path / 's'}_iter_{stopped}.caffemodel") == 1
    np.testing.assert_array_equal(np.load(tmp_path / "weights_rank0.npy"), np.load(tmp_path / "weights_rank1.npy"))
