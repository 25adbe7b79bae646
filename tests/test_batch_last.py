"""Blobs handed over batch-last between the compiled convolution and 2x2 MAX pooling.

Whoever reads a blob through `data`/`diff` must see the values the plain path gives; the layers
that understand the (C, H, W, N) layout read it where it lies. The net allows the hand-over only
between two such layers.
"""
import numpy as np
import pytest

from siamese_cli import accel
from siamese_cli.blob import Blob
from test_pooling import make as make_pooling
from test_schedule import EXAMPLES, example_net


def test_a_deferred_blob_reads_back_in_nchw_and_forgets_the_batch_last_copy():
    rng = np.random.default_rng(0)
    blob = Blob((2, 3, 4, 5))
    values, grads = rng.standard_normal((2, 3, 4, 5, 2)).astype(np.float32)
    blob.defer_data(values)
    blob.defer_diff(grads)
    assert blob.shape == (2, 3, 4, 5) and blob.count == 120
    assert blob.batch_last_data() is values and blob.batch_last_diff() is grads  # shape and count do not settle
    np.testing.assert_array_equal(blob.data, values.transpose(3, 0, 1, 2))
    np.testing.assert_array_equal(blob.diff, grads.transpose(3, 0, 1, 2))
    assert blob.batch_last_data() is None and blob.batch_last_diff() is None
    blob.data[...] = 1.0  # a reader may write: the batch-last copy must not come back
    assert np.all(blob.data == 1.0)


def test_reshape_and_assignment_drop_a_deferred_copy():
    blob = Blob((1, 2, 2, 2))
    blob.defer_data(np.ones((2, 2, 2, 1), np.float32))
    blob.reshape((1, 2, 3, 3))
    assert blob.batch_last_data() is None and np.all(blob.data == 0)
    blob.defer_diff(np.ones((2, 3, 3, 1), np.float32))
    blob.diff = np.full((1, 2, 3, 3), 5.0, np.float32)
    assert blob.batch_last_diff() is None and np.all(blob.diff == 5.0)


def test_the_net_allows_the_hand_over_only_between_two_batch_last_layers():
    net = example_net(4)
    allowed = {name for name, blob in net.blobs.items() if blob.may_defer}
    # conv1 -> pool1 -> conv2 -> pool2 in each tower; pool2 feeds an InnerProduct, which reads (N, C, H, W).
    assert allowed == {"conv1", "pool1", "conv2", "conv1_p", "pool1_p", "conv2_p"}


def _lenet_pass(setting, monkeypatch, batch=16):
    monkeypatch.setenv(accel.ENV, setting)
    rng = np.random.default_rng(5)
    net = example_net(batch)
    net.blobs["pair_data"].data[...] = rng.random((batch, 2, 28, 28), dtype=np.float32)
    net.blobs["sim"].data[...] = (rng.random(batch) < 0.5).astype(np.float32)
    net.clear_param_diffs()
    with net.batch_last_between_passes():  # as in the solver's loop
        loss = net.forward_backward()
        handed_over = {name for name, blob in net.blobs.items()
                       if blob.batch_last_data() is not None or blob.batch_last_diff() is not None}
        blobs = {name: (blob.data.copy(), blob.diff.copy()) for name, blob in net.blobs.items()}
    return loss, handed_over, blobs, [p.blob.diff.copy() for p in net.learnable_params]


def test_the_towers_hand_over_batch_last_and_every_blob_reads_as_on_the_numpy_path(monkeypatch):
    """The example's towers at batch 16: conv1 -> pool1 -> conv2 -> pool2 pass (C, H, W, N) arrays where AVX-512 is
    there; read through data/diff, every blob and every gradient equals the numpy path's to float32 summation order."""
    kernels = accel.kernels()
    if kernels is None or not kernels.conv_implicit_available():
        pytest.skip("the hand-over comes with the implicit-GEMM kernels (AVX-512)")
    loss, handed_over, blobs, grads = _lenet_pass("1", monkeypatch)
    plain_loss, plain_handed_over, plain_blobs, plain_grads = _lenet_pass("0", monkeypatch)
    assert handed_over == {"conv1", "pool1", "conv2", "conv1_p", "pool1_p", "conv2_p"}
    assert plain_handed_over == set()
    assert loss == pytest.approx(plain_loss, rel=1e-5)
    for name, (data, diff) in blobs.items():
        for mine, theirs in ((data, plain_blobs[name][0]), (diff, plain_blobs[name][1])):
            scale = max(np.abs(theirs).max(), 1e-12)
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5 * scale, err_msg=name)
    for mine, theirs in zip(grads, plain_grads):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())


@pytest.mark.parametrize("hand_over", [False, True])
def test_batch_last_pooling_keeps_caffes_first_maximum_and_routes_gradients_there(monkeypatch, hand_over):
    """Ties everywhere (small integers), a NaN, and an odd batch (a masked tail): the same top and bottom gradient as the
    numpy path on (N, C, H, W)."""
    kernels = accel.kernels()
    if kernels is None or not kernels.conv_implicit_available():
        pytest.skip("the batch-last pooling kernels come with the implicit-GEMM kernels (AVX-512)")
    rng = np.random.default_rng(6)
    x = rng.integers(0, 3, (19, 3, 4, 6)).astype(np.float32)
    x[2, 1, 0, 1] = np.nan
    dy = rng.standard_normal((19, 3, 2, 3)).astype(np.float32)
    results = []
    for setting in ("1", "0"):
        monkeypatch.setenv(accel.ENV, setting)
        layer = make_pooling("pool: MAX kernel_size: 2 stride: 2")
        bottom, top = Blob(x.shape), Blob()
        bottom.data[...] = x
        layer.setup([bottom], [top])
        layer.reshape([bottom], [top])
        if setting == "1":
            bottom.defer_data(np.ascontiguousarray(x.transpose(1, 2, 3, 0)))
            top.may_defer = bottom.may_defer = hand_over
        layer.forward([bottom], [top])
        assert (top.batch_last_data() is not None) == (setting == "1" and hand_over)
        if top.batch_last_data() is not None:
            top.defer_diff(np.ascontiguousarray(dy.transpose(1, 2, 3, 0)))
        else:
            top.diff[...] = dy
        layer.backward([top], [True], [bottom])
        assert (bottom.batch_last_diff() is not None) == (setting == "1" and hand_over)
        results.append((top.data.copy(), bottom.diff.copy()))
    (top, dx), (plain_top, plain_dx) = results
    np.testing.assert_array_equal(top, plain_top)
    assert np.isnan(top[2, 1, 0, 0])
    # Which element of a window holding a NaN takes the gradient is not specified; everywhere else it is Caffe's.
    finite = ~np.isnan(x).reshape(19, 3, 2, 2, 3, 2).any(axis=(3, 5)).repeat(2, axis=2).repeat(2, axis=3)
    np.testing.assert_array_equal(dx[finite], plain_dx[finite])
    assert np.count_nonzero(dx) == np.count_nonzero(dy)  # each gradient goes to one place in its window


CHAIN = """
name: "chain" force_backward: true
input: "data" input_shape { dim: 4 dim: 3 dim: 8 dim: 8 }
input: "target" input_shape { dim: 4 dim: 3 dim: 1 dim: 1 }
layer { name: "a" type: "Convolution" bottom: "data" top: "a" convolution_param { num_output: 5 kernel_size: 3 pad: 1 FILL } }
layer { name: "pa" type: "Pooling" bottom: "a" top: "pa" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "b" type: "Convolution" bottom: "pa" top: "b" convolution_param { num_output: 50 kernel_size: 3 pad: 1 FILL } }
layer { name: "pb" type: "Pooling" bottom: "b" top: "pb" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "c" type: "Convolution" bottom: "pb" top: "c" convolution_param { num_output: 3 kernel_size: 2 FILL } }
layer { name: "loss" type: "EuclideanLoss" bottom: "c" bottom: "target" top: "loss" }
""".replace("FILL", 'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 }')


def test_padded_convolutions_take_a_batch_last_bottom_and_give_back_plain_gradients(kernel_path, tmp_path, monkeypatch):
    """b pads the batch-last pooled input it is handed (a copy into its padded buffer) and, padded, gives its bottom
    gradient back in (N, C, H, W); c reads pb's batch-last top where it lies. Both paths give the same values."""
    from siamese_cli.net import Net

    if kernel_path == "compiled" and not accel.kernels().conv_implicit_available():
        pytest.skip("the hand-over comes with the implicit-GEMM kernels (AVX-512)")
    path = tmp_path / "chain.prototxt"
    path.write_text(CHAIN)
    data = np.random.default_rng(8).standard_normal((4, 3, 8, 8)).astype(np.float32)
    results = {}
    for setting in ("1", "0"):  # this fixture's path (thresholds lowered for the compiled one), then numpy's
        monkeypatch.setenv(accel.ENV, setting if kernel_path == "compiled" else "0")
        net = Net(str(path), phase="TRAIN", seed=3)
        net.blobs["data"].data[...] = data
        net.blobs["target"].data[...] = 0.5
        net.clear_param_diffs()
        with net.batch_last_between_passes():
            net.forward_backward()
            handed = {name for name, blob in net.blobs.items()
                      if blob.batch_last_data() is not None or blob.batch_last_diff() is not None}
            results[setting] = handed, {name: (blob.data.copy(), blob.diff.copy()) for name, blob in net.blobs.items()}, \
                [p.blob.diff.copy() for p in net.learnable_params]
    assert results["1"][0] == ({"a", "pa", "b", "pb"} if kernel_path == "compiled" else set())
    for name, (data_, diff) in results["1"][1].items():
        for mine, theirs in zip((data_, diff), results["0"][1][name]):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5 * max(np.abs(theirs).max(), 1e-12), err_msg=name)
    for mine, theirs in zip(results["1"][2], results["0"][2]):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())


def test_public_passes_and_solver_steps_leave_every_array_a_caller_holds_current(monkeypatch):
    """pycaffe code keeps `net.blobs['conv1'].data` and reads it after later passes, as Caffe's memory allows: outside
    the solver's loop every pass ends settled, and so does every solver step."""
    kernels = accel.kernels()
    if kernels is None or not kernels.conv_implicit_available():
        pytest.skip("the hand-over comes with the implicit-GEMM kernels (AVX-512)")
    rng = np.random.default_rng(9)
    pairs = [rng.random((16, 2, 28, 28), dtype=np.float32) for _ in range(2)]
    sim = (rng.random(16) < 0.5).astype(np.float32)
    values = []
    for setting in ("1", "0"):
        monkeypatch.setenv(accel.ENV, setting)
        net = example_net(16)
        held = {name: (net.blobs[name].data, net.blobs[name].diff) for name in ("conv1", "pool1", "conv2")}
        for pair in pairs:  # the second pass must reach the arrays taken before the first
            net.blobs["pair_data"].data[...] = pair
            net.blobs["sim"].data[...] = sim
            net.forward_backward()
        assert all(blob.batch_last_data() is None and blob.batch_last_diff() is None for blob in net.blobs.values())
        values.append({name: (data.copy(), diff.copy()) for name, (data, diff) in held.items()})
    for name, (data, diff) in values[0].items():
        for mine, theirs in zip((data, diff), values[1][name]):
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max(), err_msg=name)


def test_a_solver_step_hands_over_inside_and_settles_when_it_returns():
    from siamese_cli.proto import caffe_pb2
    from siamese_cli.solvers import make_solver

    kernels = accel.kernels()
    if kernels is None or not kernels.conv_implicit_available():
        pytest.skip("the hand-over comes with the implicit-GEMM kernels (AVX-512)")
    param = caffe_pb2.SolverParameter(base_lr=0.01, lr_policy="fixed", max_iter=2, random_seed=1)
    param.net_param.CopyFrom(example_net(16).param)  # Input layers in place of the DBs
    solver = make_solver(param, log=lambda *a, **k: None)
    seen = []
    forward_backward = solver.net.forward_backward

    def probe():
        loss = forward_backward()
        seen.append(solver.net.blobs["conv1"].batch_last_data() is not None)
        return loss

    solver.net.forward_backward = probe
    solver.step(2)
    assert seen == [True, True]
    assert all(blob.batch_last_data() is None and blob.batch_last_diff() is None for blob in solver.net.blobs.values())
    solver.close()


def test_pycaffe_forward_keeps_held_arrays_current(tmp_path, monkeypatch):
    """The deploy tower through pycaffe at batch 64, twice: conv1's array taken before the first pass holds the second
    pass's values (start/end passes too), equal to the numpy path's."""
    import caffe
    from siamese_cli.io.prototxt import read_net, to_text

    kernels = accel.kernels()
    if kernels is None or not kernels.conv_implicit_available():
        pytest.skip("the hand-over comes with the implicit-GEMM kernels (AVX-512)")
    deploy = read_net(EXAMPLES / "mnist_siamese.prototxt")
    deploy.input_shape[0].dim[0] = 64
    path = tmp_path / "deploy.prototxt"
    path.write_text(to_text(deploy))
    images = [np.random.default_rng(k).random((64, 1, 28, 28), dtype=np.float32) for k in (10, 11)]
    seen = []
    for setting in ("1", "0"):
        monkeypatch.setenv(accel.ENV, setting)
        net = caffe.Net(str(path), caffe.TEST)
        for name in net.params:  # the same weights on both paths
            for k, blob in enumerate(net.params[name]):
                blob.data[...] = np.random.default_rng(len(name) + k).standard_normal(blob.data.shape) * 0.1
        conv1, pool1 = net.blobs["conv1"].data, net.blobs["pool1"].data
        for x in images:
            net.forward(data=x)
        after_full = conv1.copy()
        net.forward(end="pool1", data=images[0])
        seen.append((after_full, pool1.copy()))
    for mine, theirs in zip(*seen):
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-5 * np.abs(theirs).max())
