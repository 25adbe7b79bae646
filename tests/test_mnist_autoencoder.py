"""examples/mnist/mnist_autoencoder*.prototxt: the nets build as shipped and a few iterations on real MNIST
digits (a tiny batch) lower the loss."""
from pathlib import Path

import numpy as np
import pytest

from siamese_cli.data import load_mnist
from siamese_cli.io.db import Writer
from siamese_cli.io.prototxt import read_net, read_solver
from siamese_cli.net import Net
from siamese_cli.proto import caffe_pb2
from siamese_cli.solvers import make_solver

ROOT = Path(__file__).resolve().parents[1]
NET = ROOT / "examples" / "mnist" / "mnist_autoencoder.prototxt"
SOLVER = ROOT / "examples" / "mnist" / "mnist_autoencoder_solver.prototxt"


def write_digits(path, images):
    writer = Writer(path, backend="lmdb")
    records = []
    for k, image in enumerate(images):
        datum = caffe_pb2.Datum(channels=1, height=28, width=28, data=image.tobytes(), label=0)
        records.append((b"%08d" % k, datum.SerializeToString()))
    writer.put_batch(records)
    writer.close()


@pytest.fixture
def mnist_dbs(tmp_path, monkeypatch):
    """The two LMDBs the example reads, made from a few bundled digits, under a working directory of their own."""
    images, _ = load_mnist("train")
    write_digits(tmp_path / "examples" / "mnist" / "mnist_train_lmdb", images[:64])
    write_digits(tmp_path / "examples" / "mnist" / "mnist_test_lmdb", images[64:96])
    monkeypatch.chdir(tmp_path)


def small(net_param, batch):
    for layer in net_param.layer:
        if layer.type == "Data":
            layer.data_param.batch_size = batch
    return net_param


def test_nets_build_as_shipped(mnist_dbs):
    net_param = read_net(NET)
    train = Net(net_param, phase="TRAIN", seed=0)
    try:
        check_train_net(train)
        for stage in ("test-on-train", "test-on-test"):
            test = Net(net_param, phase="TEST", stages=[stage], seed=0)
            test.close()
            assert test.outputs == train.outputs
    finally:
        train.close()


def check_train_net(train):
    assert [p.blob.shape for p in train.learnable_params][::2] == [
        (1000, 784), (500, 1000), (250, 500), (30, 250), (250, 30), (500, 250), (1000, 500), (784, 1000)]
    assert train.blobs["data"].shape == (100, 1, 28, 28)
    assert set(train.outputs) == {"cross_entropy_loss", "l2_error"}
    # Caffe's sparse gaussian: about 15 non-zero weights out of each input unit
    nonzero = (train.params["encode1"][0].data != 0).sum(axis=0).mean()
    assert 12 < nonzero < 18


def test_a_few_iterations_lower_the_loss(mnist_dbs):
    param = read_solver(SOLVER)
    assert (param.base_lr, param.momentum, list(param.test_iter)) == (pytest.approx(0.01), pytest.approx(0.9), [500, 100])
    param.ClearField("net")
    param.net_param.CopyFrom(small(read_net(NET), batch=8))
    del param.test_iter[:]
    param.test_iter.extend([2, 2])
    param.test_interval = 0
    param.display = 0
    param.snapshot = 0
    param.random_seed = 3
    solver = make_solver(param)
    try:
        train_a_little(solver)
    finally:
        for net in [solver.net] + solver.test_nets:
            net.close()


def train_a_little(solver):
    net = solver.net
    x = net.blobs["flatdata"]
    losses = []
    for _ in range(30):
        solver.step(1)
        losses.append(float(net.blobs["cross_entropy_loss"].data))
    # The reported loss is the cross-entropy per image, summed over its 784 pixels.
    assert x.shape == (8, 784) and 0 <= x.data.min() and x.data.max() <= 1
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses
    test_loss, outputs = solver.test_nets[1].mean_outputs(2)
    assert outputs["cross_entropy_loss"] < losses[0]
    assert 0 < outputs["l2_error"] < outputs["cross_entropy_loss"]
