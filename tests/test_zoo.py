"""The model-zoo deploy nets of examples/zoo build and run at batch 1; CIFAR-style nets with LRN or BatchNorm train."""
from pathlib import Path

import numpy as np
import pytest

from siamese_cli.io.prototxt import parse_text
from siamese_cli.net import Net
from siamese_cli.proto import caffe_pb2
from siamese_cli.solvers import make_solver

ZOO = Path(__file__).resolve().parent.parent / "examples" / "zoo"

# file: (learned parameter count, published; {blob: shape} along the way)
NETS = {
    "caffenet": (60_965_224, {"pool5": (1, 256, 6, 6), "fc8": (1, 1000)}),
    "alexnet": (60_965_224, {"pool2": (1, 256, 13, 13), "fc8": (1, 1000)}),
    "googlenet": (6_998_552, {"inception_3a/output": (1, 256, 28, 28), "inception_5b/output": (1, 1024, 7, 7)}),
    "resnet50": (25_557_032 + 64, {"res2c": (1, 256, 56, 56), "res5c": (1, 2048, 7, 7), "pool5": (1, 2048, 1, 1)}),
    "mobilenet": (4_231_976, {"conv7_2/sep": (1, 512, 14, 14), "conv14_2/sep": (1, 1024, 7, 7)}),
    "squeezenet_v1.1": (1_235_496, {"fire9/concat": (1, 512, 13, 13), "pool10": (1, 1000, 1, 1)}),
}


def randomise(net, seed=0):
    """He-scaled random weights, BatchNorm statistics of mean 0 and variance 1: activations stay in range."""
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        layer = net.layer_dict[name]
        if layer.type == "BatchNorm":
            blobs[0].data[...] = rng.normal(0, 0.1, blobs[0].shape)
            blobs[1].data[...] = rng.uniform(0.5, 1.5, blobs[1].shape)
            blobs[2].data[...] = 1
            continue
        weights = blobs[0]
        fan_in = weights.count // weights.shape[0] if weights.data.ndim > 1 else 1
        scale = np.sqrt(2.0 / fan_in) if weights.data.ndim > 1 else 0.1
        # Large blobs (CaffeNet's fc6: 38M) repeat one 1M-value draw: cheap, and random enough for a forward pass.
        draw = rng.standard_normal(min(weights.count, 1 << 20), dtype=np.float32) * np.float32(scale)
        weights.data.reshape(-1)[...] = np.resize(draw, weights.count)
        if layer.type == "Scale":
            weights.data += 1
        for blob in blobs[1:]:
            blob.data[...] = rng.normal(0, 0.01, blob.shape)


@pytest.mark.parametrize("name", list(NETS))
def test_zoo_net_builds_and_classifies_one_image(name):
    count, shapes = NETS[name]
    net = Net(ZOO / f"{name}_deploy.prototxt")
    assert sum(p.blob.count for p in net.learnable_params if p.lr_mult) == count
    randomise(net)
    image = np.random.default_rng(1).standard_normal(net.blobs["data"].shape).astype(np.float32)
    outputs = net.forward(data=image)
    prob = outputs["prob"]
    assert list(outputs) == ["prob"] and prob.shape[:2] == (1, 1000) and prob.size == 1000
    assert np.isfinite(prob).all() and prob.sum() == pytest.approx(1, abs=1e-5)
    assert prob.max() > 2e-3  # not the uniform output of a dead net
    for blob, shape in shapes.items():
        assert net.blobs[blob].shape == shape, blob
    if name == "resnet50":
        check_resnet_block(net)


def check_resnet_block(net):
    """res2a's projection branch, computed by hand from the randomised blobs: conv, BatchNorm, Scale."""
    x = net.blobs["pool1"].data[0].reshape(64, -1).astype(np.float64)
    conv = net.params["res2a_branch1"][0].data.reshape(256, 64) @ x
    mean, var, factor = (b.data.astype(np.float64) for b in net.params["bn2a_branch1"])
    normed = (conv - (mean / factor)[:, None]) / np.sqrt(var / factor + 1e-5)[:, None]
    gamma, beta = (b.data for b in net.params["scale2a_branch1"])
    expected = normed * gamma[:, None] + beta[:, None]
    np.testing.assert_allclose(net.blobs["res2a_branch1"].data[0].reshape(256, -1), expected, rtol=1e-3, atol=1e-4)


CIFAR = """
name: "cifar_small"
layer { name: "data" type: "Input" top: "data" top: "label"
  input_param { shape { dim: 20 dim: 3 dim: 32 dim: 32 } shape { dim: 20 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 16 pad: 2 kernel_size: 5 stride: 1
    weight_filler { type: "gaussian" std: 0.05 } bias_filler { type: "constant" } } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "pool1" top: "pool1" }
NORM1
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" param { lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 16 pad: 2 kernel_size: 5 stride: 1
    weight_filler { type: "gaussian" std: 0.05 } bias_filler { type: "constant" } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
NORM2
layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" param { lr_mult: 1 decay_mult: 250 }
  param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 10 weight_filler { type: "gaussian" std: 0.05 } bias_filler { type: "constant" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""
LRN = {  # cifar10_full's normalisation: LRN within each channel
    "NORM1": 'layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1" '
             'lrn_param { local_size: 3 alpha: 5e-05 beta: 0.75 norm_region: WITHIN_CHANNEL } }',
    "NORM2": 'layer { name: "norm2" type: "LRN" bottom: "pool2" top: "norm2" '
             'lrn_param { local_size: 3 alpha: 5e-05 beta: 0.75 norm_region: WITHIN_CHANNEL } }',
}
BATCH_NORM = {  # cifar10_full_sigmoid_train_test_bn's: BatchNorm after each pooling
    "NORM1": 'layer { name: "bn1" type: "BatchNorm" bottom: "pool1" top: "norm1" '
             'param { lr_mult: 0 } param { lr_mult: 0 } param { lr_mult: 0 } }',
    "NORM2": 'layer { name: "bn2" type: "BatchNorm" bottom: "pool2" top: "norm2" }',
}


def cifar_batch(seed=0):
    """20 CIFAR-shaped images whose class is a bright stripe at one of ten positions, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(20) % 10
    images = rng.normal(0, 0.3, (20, 3, 32, 32)).astype(np.float32)
    for image, label in zip(images, labels):
        image[label % 3, 3 * label:3 * label + 3, :] += 2.0
    return images, labels.astype(np.float32)


@pytest.mark.parametrize("norm", [LRN, BATCH_NORM], ids=["lrn", "batch_norm"])
def test_cifar_style_net_trains(norm):
    text = CIFAR.replace("NORM1", norm["NORM1"]).replace("NORM2", norm["NORM2"])
    text = text.replace('bottom: "pool1" top: "conv2"', 'bottom: "norm1" top: "conv2"')
    text = text.replace('bottom: "pool2" top: "ip1"', 'bottom: "norm2" top: "ip1"')
    solver_text = (f"net_param {{ {text} }} base_lr: 0.01 momentum: 0.9 weight_decay: 0.004 lr_policy: \"fixed\" "
                   f"max_iter: 100 random_seed: 1 solver_mode: CPU")
    solver = make_solver(parse_text(solver_text, caffe_pb2.SolverParameter()))
    images, labels = cifar_batch()
    solver.net.blobs["data"].data[...] = images
    solver.net.blobs["label"].data[...] = labels
    first = solver.net.forward_loss()
    assert 1.5 < first < 5  # about log(10) for a fresh net
    solver.step(20)
    last = solver.net.forward_loss()
    assert last < 0.6 * first
    if norm is BATCH_NORM:
        assert solver.net.params["bn1"][2].data[0] > 1  # the statistics accumulated, lr_mult 0 kept them unlearned
