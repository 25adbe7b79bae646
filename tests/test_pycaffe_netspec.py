"""caffe.NetSpec / layers / params: text Caffe reads back equal, and the LeNet tutorial's solver loop."""
import numpy as np
import pytest

import caffe
from caffe import layers as L
from caffe import params as P
from siamese_cli.data import load_mnist
from siamese_cli.io.db import Writer
from siamese_cli.io.prototxt import parse_text
from siamese_cli.proto import caffe_pb2


def lenet(lmdb, batch_size):
    """The LeNet tutorial's net function (Caffe's examples/01-learning-lenet.ipynb), as its users write it."""
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1./255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type='xavier'))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='xavier'))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


LENET_TEXT = """
layer { name: "data" type: "Data" top: "data" top: "label"
        transform_param { scale: 0.00392156862745 }
        data_param { source: "mnist/mnist_train_lmdb" batch_size: 64 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 50 kernel_size: 5 weight_filler { type: "xavier" } } }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool2" top: "fc1"
        inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "score" type: "InnerProduct" bottom: "fc1" top: "score"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss" }
"""


def test_lenet_text_parses_back_equal_to_the_hand_written_net():
    text = str(lenet("mnist/mnist_train_lmdb", 64))
    parsed = parse_text(text, caffe_pb2.NetParameter(), source="lenet_auto_train.prototxt")
    assert parsed == parse_text(LENET_TEXT, caffe_pb2.NetParameter())
    assert "pool: MAX" in text and "backend: LMDB" in text  # enums as Caffe writes them


def test_repeated_nested_enums_auto_names_and_layer_fields():
    n = caffe.NetSpec()
    n.x = L.Input(shape=[dict(dim=[2, 3, 8, 8])])
    a, b, c = L.Slice(n.x, slice_point=[1, 2], axis=1, ntop=3)
    n.conv = L.Convolution(a, num_output=4, kernel_size=3, pad=[1], bias_term=False,
                           param=[dict(name="w", lr_mult=1, decay_mult=0)],
                           weight_filler=dict(type="gaussian", std=0.01))
    n.sum = L.Eltwise(b, c, operation=P.Eltwise.SUM, coeff=[1, -1])
    n.drop = L.Dropout(n.sum, in_place=True, dropout_ratio=0.25, include=dict(phase=caffe.TRAIN))
    n.pool = L.Pooling(n.conv, pool="AVE", kernel_size=2)  # an enum by its name works too
    n.loss = L.Python(n.pool, n.drop, module="pyloss", layer="EuclideanLossLayer", param_str="{'k': 1}",
                      loss_weight=1)
    n.silence = L.Silence(n.loss, ntop=0)
    proto = n.to_proto()
    names = [layer.name for layer in proto.layer]
    assert names == ["x", "Slice1", "conv", "sum", "drop", "pool", "loss", "silence"]
    assert list(proto.layer[-1].top) == [] and list(proto.layer[-1].bottom) == ["loss"]
    by_name = {layer.name: layer for layer in proto.layer}
    assert list(by_name["Slice1"].top) == ["Slice1", "Slice2", "Slice3"]
    assert list(by_name["Slice1"].slice_param.slice_point) == [1, 2]
    conv = by_name["conv"]
    assert list(conv.convolution_param.kernel_size) == [3] and list(conv.convolution_param.pad) == [1]
    assert conv.param[0].name == "w" and conv.param[0].decay_mult == 0
    assert conv.convolution_param.weight_filler.std == pytest.approx(0.01)
    assert by_name["sum"].eltwise_param.operation == caffe_pb2.EltwiseParameter.SUM
    assert list(by_name["drop"].top) == ["sum"] and by_name["drop"].include[0].phase == caffe_pb2.TRAIN
    assert by_name["pool"].pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    assert by_name["loss"].python_param.module == "pyloss" and list(by_name["loss"].loss_weight) == [1.0]
    assert list(by_name["x"].input_param.shape[0].dim) == [2, 3, 8, 8]
    assert parse_text(str(proto), caffe_pb2.NetParameter()) == proto

    silence = L.Silence(n.x, ntop=0)
    assert [layer.name for layer in caffe.to_proto(n.conv).layer] == ["Input1", "Slice1", "Convolution1"]
    assert caffe.to_proto(silence).layer[-1].name == "Silence1"


def test_params_namespaces_come_from_the_descriptors():
    assert (P.Pooling.MAX, P.Pooling.AVE, P.Pooling.STOCHASTIC) == (0, 1, 2)
    assert (P.Data.LEVELDB, P.Data.LMDB) == (0, 1)
    assert (P.Eltwise.PROD, P.Eltwise.SUM, P.Eltwise.MAX) == (0, 1, 2)
    assert P.Convolution.CAFFE == caffe_pb2.ConvolutionParameter.CAFFE
    with pytest.raises(AttributeError, match="MEAN"):
        P.Pooling.MEAN
    with pytest.raises(AttributeError, match="neither"):
        L.Convolution(L.Input(), not_a_field=3).to_proto()


def write_mnist_lmdb(path, images, labels):
    with Writer(path, "lmdb") as writer:
        writer.put_batch([(b"%08d" % k, caffe.io.array_to_datum(image[None], int(label)).SerializeToString())
                          for k, (image, label) in enumerate(zip(images, labels))])


def test_lenet_tutorial_solver_loop(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist").mkdir()
    images, train_labels = load_mnist("train")
    write_mnist_lmdb("mnist/mnist_train_lmdb", images[:800], train_labels[:800])
    images, labels = load_mnist("test")
    write_mnist_lmdb("mnist/mnist_test_lmdb", images[:200], labels[:200])
    with open('mnist/lenet_auto_train.prototxt', 'w') as f:
        f.write(str(lenet('mnist/mnist_train_lmdb', 32)))
    with open('mnist/lenet_auto_test.prototxt', 'w') as f:
        f.write(str(lenet('mnist/mnist_test_lmdb', 50)))
    (tmp_path / "mnist/lenet_auto_solver.prototxt").write_text(
        'train_net: "mnist/lenet_auto_train.prototxt"\ntest_net: "mnist/lenet_auto_test.prototxt"\n'
        'test_iter: 2\ntest_interval: 500\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\n'
        'lr_policy: "inv"\ngamma: 0.0001\npower: 0.75\ndisplay: 100\nmax_iter: 10000\nsnapshot: 5000\n'
        'snapshot_prefix: "mnist/lenet"\nrandom_seed: 1\n')

    # The tutorial's cells, with batches of 32 and 50, 24 iterations and 4 test batches (not 64, 100, 200, 100).
    caffe.set_device(0)
    caffe.set_mode_gpu()
    solver = caffe.SGDSolver('mnist/lenet_auto_solver.prototxt')
    shapes = dict((k, v.data.shape) for k, v in solver.net.blobs.items())
    assert shapes["data"] == (32, 1, 28, 28) and shapes["conv1"] == (32, 20, 24, 24) and shapes["score"] == (32, 10)
    assert [(k, v[0].data.shape) for k, v in solver.net.params.items()] == [
        ("conv1", (20, 1, 5, 5)), ("conv2", (50, 20, 5, 5)), ("fc1", (500, 800)), ("score", (10, 500))]
    solver.net.forward()
    solver.test_nets[0].forward()
    np.testing.assert_array_equal(solver.net.blobs['label'].data[:8], train_labels[:8])
    solver.step(1)
    assert np.abs(solver.net.params['conv1'][0].diff).sum() > 0

    niter, test_interval = 24, 8
    train_loss = np.zeros(niter)
    test_acc = np.zeros(int(np.ceil(niter / test_interval)))
    output = np.zeros((niter, 8, 10))
    for it in range(niter):
        solver.step(1)
        train_loss[it] = solver.net.blobs['loss'].data
        solver.test_nets[0].forward(start='conv1')
        output[it] = solver.test_nets[0].blobs['score'].data[:8]
        if it % test_interval == 0:
            correct = 0
            for test_it in range(4):
                solver.test_nets[0].forward()
                correct += sum(solver.test_nets[0].blobs['score'].data.argmax(1)
                               == solver.test_nets[0].blobs['label'].data)
            test_acc[it // test_interval] = correct / 200
    assert solver.iter == niter + 1
    assert train_loss[-5:].mean() < 0.6 * train_loss[:5].mean()
    assert test_acc[-1] > 0.6 and test_acc[-1] > test_acc[0]
    # forward(start='conv1') reused the batch already in the data blob: same images, new weights
    assert not np.allclose(output[0], output[-1])
