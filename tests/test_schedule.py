"""Branch scheduling: which layers run at once, and that training with it gives the plain path's weights."""
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from siamese_cli import schedule
from siamese_cli.io.prototxt import parse_text, read_net
from siamese_cli.net import Net
from siamese_cli.proto import caffe_pb2
from siamese_cli.schedule import branch_schedule, requested_lanes
from siamese_cli.solvers import make_solver

from test_net import siamese_text

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "siamese"


def example_net(batch, phase="TRAIN"):
    """The example train/test net with an Input layer in place of the Data layer (no DB needed)."""
    param = read_net(EXAMPLES / "mnist_siamese_train_test.prototxt")
    for layer in param.layer:
        if layer.type == "Data":
            layer.type = "Input"
            layer.input_param.shape.add().dim.extend([batch, 2, 28, 28])
            layer.input_param.shape.add().dim.extend([batch])
            layer.ClearField("data_param")
            layer.ClearField("transform_param")
    return Net(param, phase=phase, seed=0)


def dummy_siamese(batch=6, size=12):
    """The small siamese net of test_net fed by a seeded DummyData layer: new random pairs every iteration."""
    text = siamese_text(batch=batch, size=size).replace(
        f'layer {{ name: "input" type: "Input" top: "pair_data" top: "sim"\n'
        f'  input_param {{ shape {{ dim: {batch} dim: 2 dim: {size} dim: {size} }} shape {{ dim: {batch} }} }} }}',
        f'layer {{ name: "input" type: "DummyData" top: "pair_data" top: "sim"\n'
        f'  dummy_data_param {{ shape {{ dim: {batch} dim: 2 dim: {size} dim: {size} }} shape {{ dim: {batch} }}\n'
        f'    data_filler {{ type: "gaussian" std: 1 }} data_filler {{ type: "uniform" min: 0 max: 2 }} }} }}')
    assert "DummyData" in text
    return text


def train(lanes, iterations=4, seed=7, batch=6, probe=None):
    """Weights and losses after `iterations` SGD steps (momentum 0.9, weight decay) of the small siamese net.

    BLAS runs one thread throughout, as it does in each lane: OpenBLAS sums in another order on two.
    """
    with threadpool_limits(1, user_api="blas"):
        return _train(lanes, iterations, seed, batch, probe)


def _train(lanes, iterations, seed, batch, probe):
    text = (f'net_param {{ {dummy_siamese(batch)} }}\nbase_lr: 0.05\nmomentum: 0.9\nweight_decay: 0.001\n'
            f'lr_policy: "fixed"\nmax_iter: {iterations}\nrandom_seed: {seed}\n')
    solver = make_solver(parse_text(text, caffe_pb2.SolverParameter()), log=lambda *a, **k: None)
    net = solver.net
    if net.schedule is not None:
        net.schedule.close()
    net.schedule = branch_schedule(net, lanes=lanes, min_values=0)
    assert (net.schedule is not None) == (lanes > 1)
    losses = []
    for _ in range(iterations):
        solver.step(1)
        losses.append(solver.smoothed_loss)
    weights = [p.blob.data.copy() for p in net.learnable_params]
    if probe is not None:
        probe(net)
    solver.close()
    return weights, losses


def test_example_nets_run_their_towers_in_two_lanes(monkeypatch):
    monkeypatch.delenv(schedule.ENV, raising=False)
    net = example_net(64)
    lanes = branch_schedule(net, lanes=2).lane_names()
    tower = ["conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "feat"]
    assert lanes == [[tower, [name + "_p" for name in tower]]]
    # The data layer, the slice and the loss run alone, before and after the towers.
    stages = branch_schedule(net, lanes=2).stages
    names = [lp.name for lp in net.param.layer]
    assert [names[payload] for kind, payload in stages if kind == "layer"] == ["pair_data", "slice_pair", "loss"]
    assert [kind for kind, _ in stages] == ["layer", "layer", "lanes", "layer"]
    # Tiny towers are not worth a thread; one lane means the plain path.
    assert branch_schedule(example_net(1, phase="TEST"), lanes=2) is None
    assert branch_schedule(net, lanes=1) is None


def test_a_single_chain_and_the_switch_give_the_plain_path(monkeypatch):
    deploy = Net(EXAMPLES / "mnist_siamese.prototxt", phase="TEST")
    assert deploy.schedule is None and branch_schedule(deploy, lanes=2, min_values=0) is None
    for value, lanes in (("1", 1), ("0", 1), ("off", 1), ("3", 3)):
        monkeypatch.setenv(schedule.ENV, value)
        assert requested_lanes() == lanes
    monkeypatch.setenv(schedule.ENV, "1")
    assert example_net(64).schedule is None


def test_in_place_layers_and_readers_are_ordered():
    net = example_net(2)
    deps = schedule.layer_dependencies(net)
    names = [lp.name for lp in net.param.layer]
    index = names.index
    assert deps[index("relu1")] == {index("ip1")}
    assert deps[index("ip2")] == {index("relu1")}  # the in-place ReLU's output, not ip1's
    assert deps[index("loss")] == {index("feat"), index("feat_p"), index("pair_data")}


def test_lanes_give_the_plain_path_weights_after_training():
    plain_weights, plain_losses = train(lanes=1)
    lane_weights, lane_losses = train(lanes=2)
    assert len(plain_weights) == 6
    for plain, lanes in zip(plain_weights, lane_weights):
        np.testing.assert_allclose(lanes, plain, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(lane_losses, plain_losses, rtol=1e-5)
    # Every layer adds its gradient once, and the private diff is added where the plain pass adds
    # that tower's gradient: the sums are the same float32 operations in the same order.
    for plain, lanes in zip(plain_weights, lane_weights):
        assert np.array_equal(lanes, plain)
    assert lane_losses == plain_losses
    # The weights moved: the comparison is not between two untouched initialisations.
    initial, _ = train(lanes=1, iterations=0)
    assert not np.allclose(initial[0], plain_weights[0])


def test_seeded_runs_with_lanes_are_bit_identical():
    first, first_losses = train(lanes=2, iterations=5, seed=11)
    second, second_losses = train(lanes=2, iterations=5, seed=11)
    assert first_losses == second_losses
    for a, b in zip(first, second):
        assert np.array_equal(a, b)


@pytest.mark.usefixtures("kernel_path")
def test_the_implicit_gemm_convolution_keeps_runs_bit_identical_and_equal_to_the_plain_path():
    """At batch 8 the towers' conv1 takes the compiled implicit-GEMM path where AVX-512 is there (numpy else)."""
    from siamese_cli import accel

    paths = []

    def probe(net):
        paths.append({layer.name: layer._plan.implicit is not None for layer in net.layers if layer.type == "Convolution"})

    first, first_losses = train(lanes=2, iterations=5, seed=13, batch=8, probe=probe)
    second, second_losses = train(lanes=2, iterations=5, seed=13, batch=8)
    plain, plain_losses = train(lanes=1, iterations=5, seed=13, batch=8)
    kernels = accel.kernels()
    assert paths == [{"conv1": bool(kernels and kernels.conv_implicit_available()),
                      "conv1_p": bool(kernels and kernels.conv_implicit_available())}]
    assert first_losses == second_losses == plain_losses
    for a, b, c in zip(first, second, plain):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_shared_gradients_equal_the_plain_pass_and_blobs_are_restored():
    rng = np.random.default_rng(3)
    pair = rng.random((16, 2, 28, 28), dtype=np.float32)
    sim = (rng.random(16) < 0.5).astype(np.float32)
    results = []
    for lanes, blas_threads in ((1, None), (2, None), (1, 1)):
        net = example_net(16)
        net.schedule = branch_schedule(net, lanes=lanes, min_values=0)
        limit = threadpool_limits(blas_threads, user_api="blas")
        blobs = {name: list(layer.blobs) for name, layer in net.layer_dict.items()}
        net.blobs["pair_data"].data[...] = pair
        net.blobs["sim"].data[...] = sim
        net.clear_param_diffs()
        for p in net.learnable_params:  # a non-zero starting diff, as with iter_size > 1
            p.blob.diff[...] = 0.5
        loss = net.forward_backward()
        limit.restore_original_limits()
        assert {name: list(layer.blobs) for name, layer in net.layer_dict.items()} == blobs
        assert net.params["conv1"][0] is net.params["conv1_p"][0]
        results.append((loss, [p.blob.diff.copy() for p in net.learnable_params]))
        net.close()
    (plain_loss, plain), (lane_loss, lanes), (single_loss, single) = results
    assert lane_loss == pytest.approx(plain_loss, rel=1e-6)
    for k, (a, b) in enumerate(zip(plain, lanes)):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        if k % 2 == 0:  # the towers contributed (the last bias's two tower gradients cancel exactly)
            assert np.abs(a - 0.5).max() > 1e-4
    # Against the plain pass with one BLAS thread (as each lane has), bit for bit. With a non-zero
    # starting diff the order matters ((d + g_p) + g versus (d + g) + g_p): the lanes add the
    # second tower's gradient first, as the plain backward pass does.
    assert lane_loss == single_loss
    for a, b in zip(single, lanes):
        assert np.array_equal(b, a)


def test_an_error_in_a_lane_reaches_the_caller():
    net = example_net(4)
    net.schedule = branch_schedule(net, lanes=2, min_values=0)

    def broken(bottom, top):
        raise RuntimeError("lane failure")

    net.layer_dict["pool2_p"].forward = broken
    with pytest.raises(RuntimeError, match="lane failure"):
        net.forward_loss()
    net.close()


def test_lanes_run_under_the_callers_numpy_error_state():
    net = example_net(4)
    net.schedule = branch_schedule(net, lanes=2, min_values=0)
    seen = {}
    for name in ("pool2", "pool2_p"):  # one layer in each lane
        layer = net.layer_dict[name]

        def record(bottom, top, name=name, forward=layer.forward):
            seen[name] = np.geterr()["over"]
            forward(bottom, top)

        layer.forward = record
    with np.errstate(over="ignore"):
        net.forward_loss()
    assert seen == {"pool2": "ignore", "pool2_p": "ignore"}
    net.close()


def test_branches_with_layers_that_share_outside_state_run_plainly(monkeypatch):
    net = example_net(64)
    assert branch_schedule(net, lanes=2) is not None
    monkeypatch.setattr(schedule, "SERIAL_TYPES", frozenset({"Pooling"}))
    assert branch_schedule(net, lanes=2) is None


def test_an_error_in_the_main_lane_waits_for_the_other_lane():
    net = example_net(4)
    net.schedule = branch_schedule(net, lanes=2, min_values=0)
    finished = []
    original = net.layer_dict["feat_p"].forward

    def slow_last(bottom, top):
        import time
        time.sleep(0.2)
        original(bottom, top)
        finished.append(True)

    def broken(bottom, top):
        raise RuntimeError("main lane failure")

    net.layer_dict["feat_p"].forward = slow_last
    net.layer_dict["conv1"].forward = broken
    with pytest.raises(RuntimeError, match="main lane failure"):
        net.forward_loss()
    assert finished == [True]
    net.close()


def test_blas_threads_are_restored_after_a_pass():
    from threadpoolctl import threadpool_info

    def blas_threads():
        return [entry["num_threads"] for entry in threadpool_info() if entry["user_api"] == "blas"]

    net = example_net(4)
    net.schedule = branch_schedule(net, lanes=2, min_values=0)
    before = blas_threads()
    net.forward_backward()
    assert blas_threads() == before
    with threadpool_limits(1, user_api="blas"):
        net.forward_backward()
        assert blas_threads() == [1] * len(before)
    assert blas_threads() == before
    net.close()
