"""The deploy tower's throughput, the test-pass and snapshot times, and the model of the full run
(parts of scripts/bench.py, kept apart to keep that script readable)."""
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "siamese"


def deploy_forward(train_net):
    """A step(images) function: the deploy net (one tower) with the trained weights, forward only."""
    import numpy as np
    from siamese_cli.net import Net

    net = Net(EXAMPLE / "mnist_siamese.prototxt", phase="TEST", seed=0)
    net.share_weights_from(train_net)
    rng = np.random.default_rng(0)

    def forward(batch):
        blob = net.blobs["data"]
        if blob.shape[0] != batch:
            blob.reshape((batch, 1, 28, 28))
            blob.data[...] = rng.random(blob.shape, dtype=np.float32)
        net.forward_loss()

    return forward


def torch_deploy_forward(tower):
    import torch

    inputs = {}

    def forward(batch):
        if batch not in inputs:
            inputs[batch] = torch.rand(batch, 1, 28, 28)
        with torch.inference_mode():
            tower(inputs[batch])

    return forward


def images_per_second(forward, batch, images, settle=0.3):
    forward(batch)
    time.sleep(settle)
    passes = max(1, images // batch)
    start = time.perf_counter()
    for _ in range(passes):
        forward(batch)
    return passes * batch / (time.perf_counter() - start)


def test_and_snapshot_seconds(train_db, test_db, workdir, repeats, batches=100):
    """([seconds per test pass of 100 batches of 100 pairs], [seconds per snapshot]), `repeats` of each.

    With fewer `batches` (a quick run) the pass is timed over those and scaled to 100.
    """
    from bench import make_solver, solver_param

    param = solver_param(train_db, test_db, test_iter=batches, test_interval=500)
    param.snapshot_prefix = str(Path(workdir) / "bench_snapshot")
    solver = make_solver(param)
    try:
        solver.step(1)
        tests, snapshots = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            solver.test_all()
            tests.append((time.perf_counter() - start) * 100 / batches)
            start = time.perf_counter()
            solver.snapshot()
            snapshots.append(time.perf_counter() - start)
    finally:
        solver.close()
    return tests, snapshots


def full_run_model(iteration_ms, test_s, snapshot_s, param_path=EXAMPLE / "mnist_siamese_solver.prototxt"):
    """Modelled wall time of the example solver's whole run: {training, testing, snapshots, total} in seconds."""
    from siamese_cli.io.prototxt import read_solver

    param = read_solver(param_path)
    iters = param.max_iter
    passes = len(range(0 if param.test_initialization else param.test_interval, iters + 1, param.test_interval))
    snapshots = iters // param.snapshot if param.snapshot else 0
    model = {"iterations": iters, "test_passes": passes, "snapshots": snapshots,
             "training_s": iters * iteration_ms / 1e3, "testing_s": passes * test_s,
             "snapshots_s": snapshots * snapshot_s}
    model["total_s"] = model["training_s"] + model["testing_s"] + model["snapshots_s"]
    return model


# ---- the benchmark -------------------------------------------------------------------------
