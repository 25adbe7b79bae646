"""Net: shapes of the example nets, shared parameters, gradients of the whole siamese net, weight files."""
from pathlib import Path

import numpy as np
import pytest

from siamese_cli.errors import SiameseError
from siamese_cli.io.prototxt import parse_text, read_net
from siamese_cli.net import Net
from siamese_cli.proto import caffe_pb2

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "siamese"


def net_from(text, **kwargs):
    return Net(parse_text(text, caffe_pb2.NetParameter()), **kwargs)


def siamese_text(batch=3, size=8, margin=1.0):
    tower = ""
    for s, blob in (("", "data"), ("_p", "data_p")):
        tower += f"""
layer {{ name: "conv1{s}" type: "Convolution" bottom: "{blob}" top: "conv1{s}"
  param {{ name: "conv1_w" lr_mult: 1 }} param {{ name: "conv1_b" lr_mult: 2 }}
  convolution_param {{ num_output: 3 kernel_size: 3 weight_filler {{ type: "xavier" }}
                       bias_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "pool1{s}" type: "Pooling" bottom: "conv1{s}" top: "pool1{s}"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip1{s}" type: "InnerProduct" bottom: "pool1{s}" top: "ip1{s}"
  param {{ name: "ip1_w" lr_mult: 1 }} param {{ name: "ip1_b" lr_mult: 2 }}
  inner_product_param {{ num_output: 6 weight_filler {{ type: "xavier" }} bias_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "relu1{s}" type: "ReLU" bottom: "ip1{s}" top: "ip1{s}" }}
layer {{ name: "feat{s}" type: "InnerProduct" bottom: "ip1{s}" top: "feat{s}"
  param {{ name: "feat_w" lr_mult: 1 }} param {{ name: "feat_b" lr_mult: 2 }}
  inner_product_param {{ num_output: 2 weight_filler {{ type: "xavier" }} }} }}"""
    return f"""
name: "small_siamese"
layer {{ name: "input" type: "Input" top: "pair_data" top: "sim"
  input_param {{ shape {{ dim: {batch} dim: 2 dim: {size} dim: {size} }} shape {{ dim: {batch} }} }} }}
layer {{ name: "slice_pair" type: "Slice" bottom: "pair_data" top: "data" top: "data_p"
  slice_param {{ slice_dim: 1 slice_point: 1 }} }}
{tower}
layer {{ name: "loss" type: "ContrastiveLoss" bottom: "feat" bottom: "feat_p" bottom: "sim" top: "loss"
  contrastive_loss_param {{ margin: {margin} }} }}"""


def test_example_train_net_shapes(tmp_path, monkeypatch):
    param = read_net(EXAMPLES / "mnist_siamese_train_test.prototxt")
    for layer in param.layer:  # swap the Data layers for an Input so no DB is needed
        if layer.type == "Data":
            layer.type = "Input"
            layer.input_param.shape.add().dim.extend([64, 2, 28, 28])
            layer.input_param.shape.add().dim.extend([64])
            layer.ClearField("data_param")
            layer.ClearField("transform_param")
    net = Net(param, phase="TRAIN")
    shapes = {name: blob.shape for name, blob in net.blobs.items()}
    assert shapes["data"] == (64, 1, 28, 28)
    assert shapes["conv1"] == (64, 20, 24, 24) and shapes["pool1"] == (64, 20, 12, 12)
    assert shapes["conv2"] == (64, 50, 8, 8) and shapes["pool2_p"] == (64, 50, 4, 4)
    assert shapes["ip1"] == (64, 500) and shapes["feat_p"] == (64, 2)
    assert net.outputs == ["loss"]
    # Ten named params, each stored once though used by both towers.
    assert len(net.learnable_params) == 10
    assert net.params["conv1"][0] is net.params["conv1_p"][0]
    assert [p.lr_mult for p in net.learnable_params] == [1, 2] * 5
    # Nothing needs the image gradient: slice and the data take no backward.
    assert not net.layer_needs_backward[list(net.layer_dict).index("slice_pair")]
    assert net.propagate_down[list(net.layer_dict).index("conv1")] == [False]


def test_deploy_net_gives_2d_features():
    net = Net(EXAMPLES / "mnist_siamese.prototxt", phase="TEST", seed=0)
    assert net.inputs == ["data"] and net.outputs == ["feat"]
    for layer in net.layers:  # deploy nets carry no fillers: give them weights
        for blob in layer.blobs:
            blob.data[...] = np.random.default_rng(1).standard_normal(blob.shape) * 0.05
    out = net.forward(data=np.random.default_rng(2).random((5, 1, 28, 28), dtype=np.float32))
    assert out["feat"].shape == (5, 2) and out["feat"].dtype == np.float32
    assert net.blobs["ip1"].data.min() >= 0  # in-place ReLU applied
    assert np.abs(out["feat"]).sum() > 0


def _loss_and_grads(net, pair, sim):
    net.blobs["pair_data"].data[...] = pair
    net.blobs["sim"].data[...] = sim
    net.clear_param_diffs()
    loss = net.forward_backward()
    return loss, [p.blob.diff.copy() for p in net.learnable_params]


def test_whole_siamese_net_gradient_matches_numerical():
    net = net_from(siamese_text(), phase="TRAIN", seed=4)
    rng = np.random.default_rng(0)
    pair = rng.random((3, 2, 8, 8), dtype=np.float32)
    sim = np.array([1, 0, 0], np.float32)
    loss, grads = _loss_and_grads(net, pair, sim)
    assert loss > 0
    step = 1e-3  # small enough not to cross a max-pooling or ReLU switch
    for param, grad in zip(net.learnable_params, grads):
        flat = param.blob.data.reshape(-1)
        for index in rng.choice(flat.size, size=min(6, flat.size), replace=False):
            original = flat[index]
            flat[index] = original + step
            plus = net.forward_loss()
            flat[index] = original - step
            minus = net.forward_loss()
            flat[index] = original
            numeric = (plus - minus) / (2 * step)
            assert grad.reshape(-1)[index] == pytest.approx(numeric, rel=3e-2, abs=2e-4), param.name


def test_shared_gradient_is_the_sum_of_both_towers():
    shared = net_from(siamese_text(), phase="TRAIN", seed=4)
    rng = np.random.default_rng(0)
    pair = rng.random((3, 2, 8, 8), dtype=np.float32)
    sim = np.array([0, 1, 0], np.float32)
    _, grads = _loss_and_grads(shared, pair, sim)
    # The same net with separate (but equal) parameters per tower: the shared gradient is their sum.
    text = siamese_text()
    for name in ("conv1_w", "conv1_b", "ip1_w", "ip1_b", "feat_w", "feat_b"):
        text = text.replace(f'name: "{name}" ', "")
    separate = net_from(text, phase="TRAIN", seed=4)
    assert len(separate.learnable_params) == 12
    for layer_name, blobs in shared.params.items():
        for k, blob in enumerate(blobs):
            separate.params[layer_name][k].data[...] = blob.data
    _, separate_grads = _loss_and_grads(separate, pair, sim)
    by_name = {p.name: g for p, g in zip(separate.learnable_params, separate_grads)}
    for k, layer in enumerate(("conv1", "ip1", "feat")):
        for j in range(2):
            total = by_name[f"{layer}[{j}]"] + by_name[f"{layer}_p[{j}]"]
            np.testing.assert_allclose(grads[2 * k + j], total, rtol=1e-5, atol=1e-7)


def test_caffemodel_round_trip(tmp_path):
    net = net_from(siamese_text(), phase="TRAIN", seed=1)
    path = tmp_path / "w.caffemodel"
    net.save(path)
    proto = caffe_pb2.NetParameter()
    proto.ParseFromString(path.read_bytes())
    conv = next(layer for layer in proto.layer if layer.name == "conv1_p")
    assert list(conv.blobs[0].shape.dim) == [3, 1, 3, 3]
    np.testing.assert_array_equal(np.array(conv.blobs[0].data, np.float32).reshape(3, 1, 3, 3),
                                  net.params["conv1"][0].data)
    other = net_from(siamese_text(), phase="TRAIN", seed=99)
    assert not np.array_equal(other.params["ip1"][0].data, net.params["ip1"][0].data)
    other.copy_from(path)
    for name, blobs in net.params.items():
        for a, b in zip(blobs, other.params[name]):
            np.testing.assert_array_equal(a.data, b.data)


def test_copy_from_reads_legacy_4d_shapes(tmp_path):
    net = net_from(siamese_text(), phase="TRAIN", seed=1)
    proto = net.to_proto()
    for layer in proto.layer:
        for blob in layer.blobs:
            dims = list(blob.shape.dim)
            blob.ClearField("shape")
            blob.num, blob.channels, blob.height, blob.width = ([1] * (4 - len(dims)) + dims)
    (tmp_path / "legacy.caffemodel").write_bytes(proto.SerializeToString())
    other = net_from(siamese_text(), phase="TRAIN", seed=2)
    other.copy_from(tmp_path / "legacy.caffemodel")
    np.testing.assert_array_equal(other.params["feat"][0].data, net.params["feat"][0].data)


def test_phase_and_stage_rules():
    text = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "train_only" type: "ReLU" bottom: "x" top: "a" include { phase: TRAIN } }
layer { name: "test_only" type: "ReLU" bottom: "x" top: "a" include { phase: TEST } }
layer { name: "not_deploy" type: "ReLU" bottom: "x" top: "b" exclude { stage: "deploy" } }
layer { name: "leveled" type: "ReLU" bottom: "x" top: "c" include { min_level: 2 } }
"""
    def names(net):
        return [name for name, layer in net.layer_dict.items() if layer.type != "Split"]

    assert names(net_from(text, phase="TRAIN")) == ["in", "train_only", "not_deploy"]
    assert names(net_from(text, phase="TEST", stages=["deploy"])) == ["in", "test_only"]
    assert "leveled" in names(net_from(text, phase="TEST", level=3))


def test_blob_with_two_readers_sums_gradients():
    text = """
force_backward: true
layer { name: "in" type: "Input" top: "x" top: "sim" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
layer { name: "b" type: "InnerProduct" bottom: "x" top: "b" inner_product_param { num_output: 2 weight_filler { type: "gaussian" } } }
layer { name: "loss" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "sim" top: "loss" }
"""
    net = net_from(text, phase="TRAIN", seed=0)
    assert any(layer.type == "Split" for layer in net.layers)
    net.blobs["x"].data[...] = np.arange(6, dtype=np.float32).reshape(2, 3) / 5
    net.blobs["sim"].data[...] = [1, 1]
    net.forward_backward()
    wa, wb = net.params["a"][0].data, net.params["b"][0].data
    diff = net.blobs["a"].data - net.blobs["b"].data
    # Similar pairs: dL/da = (a - b)/N, dL/db = -(a - b)/N; x feeds both.
    expected = (diff / 2) @ wa - (diff / 2) @ wb
    np.testing.assert_allclose(net.blobs["x"].diff, expected, rtol=1e-5, atol=1e-7)


def test_shared_param_errors():
    text = """
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "a" type: "InnerProduct" bottom: "x" top: "a" param { name: "w" } inner_product_param { num_output: 2 } }
layer { name: "b" type: "InnerProduct" bottom: "x" top: "b" param { name: "w" } inner_product_param { num_output: 4 } }
"""
    with pytest.raises(SiameseError, match='shared param "w".*same shape'):
        net_from(text)
    text = text.replace("num_output: 4", "num_output: 2").replace('param { name: "w" } inner_product_param { num_output: 2 } }\nlayer { name: "b"',
                                                               'param { name: "w" lr_mult: 1 } inner_product_param { num_output: 2 } }\nlayer { name: "b"')
    text = text.replace('top: "b" param { name: "w" }', 'top: "b" param { name: "w" lr_mult: 3 }')
    with pytest.raises(SiameseError, match="lr_mult 3 differs"):
        net_from(text)


def test_unknown_bottom_and_layer_type_are_clear_errors():
    with pytest.raises(SiameseError, match='unknown bottom blob "nope"'):
        net_from('layer { name: "r" type: "ReLU" bottom: "nope" top: "r" }')
    with pytest.raises(SiameseError, match='layer "f": layer type "Frobnicate" is not supported; supported types: '):
        net_from('layer { name: "f" type: "Frobnicate" }')
