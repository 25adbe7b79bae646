"""V0/V1 nets, weights and solvers upgraded by Caffe's rules (io/upgrade.py, siamese upgrade-net/-solver)."""
import struct

import numpy as np
import pytest

from siamese_cli.cli import main
from siamese_cli.errors import SiameseError
from siamese_cli.io.datum_layout import varint as _varint
from siamese_cli.io.prototxt import parse_text, read_net, read_solver
from siamese_cli.io.upgrade import upgrade_net
from siamese_cli.net import Net
from siamese_cli.proto import caffe_pb2


class _Quiet:
    def __init__(self):
        self.lines = []

    def __call__(self, message, severity="I", depth=1):
        self.lines.append(message)

    def warning(self, message):
        self.lines.append("W " + message)


V1_NET = """
name: "tiny"
input: "data"
input_dim: 2 input_dim: 1 input_dim: 4 input_dim: 4
layers {
  name: "conv" type: CONVOLUTION bottom: "data" top: "conv"
  blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
  param: "cw" param: "cb"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } }
}
layers { name: "relu" type: RELU bottom: "conv" top: "conv" }
layers {
  name: "ip" type: INNER_PRODUCT bottom: "conv" top: "ip"
  inner_product_param { num_output: 2 }
  include { phase: TEST }
}
layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip" bottom: "ip" top: "loss" loss_weight: 0.5 }
"""


def test_v1_text_net_upgrades_as_caffe():
    net = parse_text(V1_NET, caffe_pb2.NetParameter())
    log = _Quiet()
    assert upgrade_net(net, "tiny.prototxt", log)
    assert "Attempting to upgrade input file specified using deprecated V1LayerParameter: tiny.prototxt" in log.lines
    assert "Successfully upgraded file specified using deprecated V1LayerParameter" in log.lines
    assert len(net.layers) == 0
    assert [layer.type for layer in net.layer] == ["Convolution", "ReLU", "InnerProduct", "SoftmaxWithLoss"]
    conv = net.layer[0]
    assert [(p.name, p.lr_mult, p.decay_mult) for p in conv.param] == [("cw", 1, 1), ("cb", 2, 0)]
    assert conv.convolution_param.num_output == 3
    assert conv.convolution_param.weight_filler.std == pytest.approx(0.1)
    assert net.layer[2].include[0].phase == caffe_pb2.TEST
    assert list(net.layer[3].loss_weight) == [0.5]
    assert list(net.input_dim) == [2, 1, 4, 4]  # inputs stay inputs in memory


def test_v1_data_layer_transform_fields_move_to_transform_param():
    net = parse_text('layers { name: "d" type: DATA top: "x" data_param { source: "s" scale: 0.5 mirror: true '
                     'crop_size: 3 mean_file: "m" batch_size: 4 } }', caffe_pb2.NetParameter())
    log = _Quiet()
    upgrade_net(net, "d", log)
    layer = net.layer[0]
    assert layer.type == "Data"
    t = layer.transform_param
    assert (t.scale, t.mirror, t.crop_size, t.mean_file) == (0.5, True, 3, "m")
    assert not layer.data_param.HasField("scale") and layer.data_param.batch_size == 4
    assert any("transformation parameters" in line for line in log.lines)


def test_v0_net_with_padding_layer_folds_into_conv():
    text = """
    name: "old" input: "data" input_dim: 1 input_dim: 1 input_dim: 5 input_dim: 5
    layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }
    layers { layer { name: "conv1" type: "conv" num_output: 4 kernelsize: 3 stride: 2 biasterm: false
                     blobs_lr: 1 weight_decay: 1 } bottom: "pad1" top: "conv1" }
    layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 2 stride: 1 } bottom: "conv1" top: "pool1" }
    layers { layer { name: "fc" type: "innerproduct" num_output: 3 } bottom: "pool1" top: "fc" }
    layers { layer { name: "d" type: "data" source: "db" batchsize: 8 scale: 0.25 cropsize: 2 } top: "x" }
    """
    net = parse_text(text, caffe_pb2.NetParameter())
    log = _Quiet()
    upgrade_net(net, "old", log)
    assert [layer.name for layer in net.layer] == ["conv1", "pool1", "fc", "d"]
    conv = net.layer[0]
    assert conv.type == "Convolution" and list(conv.bottom) == ["data"]
    c = conv.convolution_param
    assert (list(c.pad), list(c.kernel_size), list(c.stride), c.num_output, c.bias_term) == ([2], [3], [2], 4, False)
    assert conv.param[0].lr_mult == 1 and conv.param[0].decay_mult == 1
    pool = net.layer[1].pooling_param
    assert (pool.pool, pool.kernel_size, pool.stride) == (caffe_pb2.PoolingParameter.AVE, 2, 1)
    data = net.layer[3]
    assert (data.type, data.data_param.source, data.data_param.batch_size) == ("Data", "db", 8)
    assert (data.transform_param.scale, data.transform_param.crop_size) == (0.25, 2)
    assert any("V0LayerParameter" in line for line in log.lines)
    # and it runs: 5x5 padded by 2 to 9x9, 3x3 kernel stride 2 -> 4x4, pool 2 stride 1 -> 3x3
    del net.layer[3]
    built = Net(net, phase="TEST", seed=0)
    assert built.blobs["conv1"].shape == (1, 4, 4, 4) and built.blobs["pool1"].shape == (1, 4, 3, 3)


def test_unknown_v0_type_and_mixed_formats_are_errors():
    with pytest.raises(SiameseError, match='unknown type "warp"'):
        upgrade_net(parse_text('layers { layer { name: "w" type: "warp" } }', caffe_pb2.NetParameter()), "f", _Quiet())
    mixed = parse_text('layer { name: "a" type: "ReLU" } layers { name: "b" type: RELU }', caffe_pb2.NetParameter())
    with pytest.raises(SiameseError, match="both `layer`"):
        upgrade_net(mixed, "f", _Quiet())


def test_batch_norm_with_three_params_gets_zero_rates():
    net = parse_text('layer { name: "bn" type: "BatchNorm" param { lr_mult: 1 } param { lr_mult: 1 } '
                     'param { lr_mult: 1 decay_mult: 1 } }', caffe_pb2.NetParameter())
    assert upgrade_net(net, "bn", _Quiet())
    assert [(p.lr_mult, p.decay_mult) for p in net.layer[0].param] == [(0, 0)] * 3


# ---- V1 weights, built byte by byte from Caffe's schema numbers ------------------------------------
def _key(field, wire):
    return bytes([field << 3 | wire]) if field < 16 else _varint(field << 3 | wire)


def _len(field, payload):
    return _key(field, 2) + _varint(len(payload)) + payload


def _v1_blob(values, shape4):
    """BlobProto in the legacy form: num 1, channels 2, height 3, width 4, data 5 (packed floats)."""
    head = b"".join(_key(f, 0) + _varint(d) for f, d in zip((1, 2, 3, 4), shape4))
    return head + _len(5, struct.pack(f"<{len(values)}f", *values))


def _v1_caffemodel(weights, bias):
    """NetParameter{name 1, layers 2: V1LayerParameter{bottom 2, top 3, name 4, type 5 (INNER_PRODUCT=14), blobs 6}}."""
    layer = (_len(2, b"data") + _len(3, b"ip") + _len(4, b"ip") + _key(5, 0) + _varint(14)
             + _len(6, _v1_blob(weights.ravel().tolist(), (1, 1) + weights.shape))
             + _len(6, _v1_blob(bias.tolist(), (1, 1, 1, bias.size))))
    return _len(1, b"v1net") + _len(2, layer)


DEPLOY = """
name: "d" input: "data" input_shape { dim: 2 dim: 3 }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
"""


def test_v1_caffemodel_bytes_load_into_a_current_net(tmp_path):
    weights = np.arange(6, dtype=np.float32).reshape(2, 3) / 10
    bias = np.array([0.5, -1.0], np.float32)
    path = tmp_path / "old.caffemodel"
    path.write_bytes(_v1_caffemodel(weights, bias))
    # the bytes are what protobuf itself writes for the same V1 message
    reference = caffe_pb2.NetParameter()
    reference.ParseFromString(path.read_bytes())
    assert reference.layers[0].type == caffe_pb2.V1LayerParameter.INNER_PRODUCT
    net = Net(parse_text(DEPLOY, caffe_pb2.NetParameter()), phase="TEST")
    net.copy_from(path)
    np.testing.assert_array_equal(net.params["ip"][0].data, weights)
    x = np.array([[1, 2, 3], [0, -1, 1]], np.float32)
    np.testing.assert_allclose(net.forward(data=x)["ip"], x @ weights.T + bias, rtol=1e-6)


def test_upgrade_net_cli_text_and_binary(tmp_path, capsys):
    source = tmp_path / "v1.prototxt"
    source.write_text(V1_NET)
    out = tmp_path / "new.prototxt"
    assert main(["upgrade-net", str(source), str(out)]) == 0
    text = out.read_text()
    assert "layers" not in text and 'type: "Convolution"' in text and "lr_mult: 2" in text
    upgraded = read_net(out)
    assert upgraded.layer[0].type == "Input" and list(upgraded.layer[0].input_param.shape[0].dim) == [2, 1, 4, 4]
    assert not len(upgraded.input)

    weights = np.ones((2, 3), np.float32)
    old = tmp_path / "old.caffemodel"
    old.write_bytes(_v1_caffemodel(weights, np.zeros(2, np.float32)))
    new = tmp_path / "new.caffemodel"
    assert main(["upgrade-net", str(old), str(new)]) == 0
    proto = caffe_pb2.NetParameter.FromString(new.read_bytes())
    assert not len(proto.layers) and proto.layer[0].type == "InnerProduct"
    assert list(proto.layer[0].blobs[0].data) == [1.0] * 6
    assert "Wrote upgraded NetParameter binary proto" in capsys.readouterr().err


def test_upgrade_solver_cli(tmp_path):
    source = tmp_path / "s.prototxt"
    source.write_text('solver_type: ADAM base_lr: 0.1 net: "n.prototxt"\n')
    out = tmp_path / "s2.prototxt"
    assert main(["upgrade-solver", str(source), str(out)]) == 0
    solver = read_solver(out)
    assert solver.type == "Adam" and not solver.HasField("solver_type")
    source.write_text('solver_type: ADAM type: "SGD"\n')
    assert main(["upgrade-solver", str(source), str(out)]) == 2


def test_consolidated_solver_with_inline_v1_net_trains(tmp_path, monkeypatch):
    """A lenet_consolidated_solver-style solver: a V1 net inside net_param, two test nets by stage."""
    from siamese_cli.solvers import load_solver

    monkeypatch.chdir(tmp_path)
    solver_text = """
    test_iter: 1 test_state { stage: "a" }
    test_iter: 1 test_state { stage: "b" }
    test_interval: 2 base_lr: 0.1 lr_policy: "fixed" max_iter: 3 display: 1 random_seed: 3 solver_type: SGD
    snapshot_after_train: false
    net_param {
      name: "V1Inline"
      layers { name: "d" type: DUMMY_DATA top: "x" top: "y"
               dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
                                  data_filler { type: "gaussian" } data_filler { type: "constant" value: 1 } } }
      layers { name: "ip" type: INNER_PRODUCT bottom: "x" top: "ip" blobs_lr: 1 blobs_lr: 2
               inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
      layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip" bottom: "y" top: "loss" }
      layers { name: "acc" type: ACCURACY bottom: "ip" bottom: "y" top: "acc"
               include { phase: TEST stage: "a" } }
    }
    """
    (tmp_path / "solver.prototxt").write_text(solver_text)
    solver = load_solver("solver.prototxt", log=_Quiet())
    assert [lp.param[1].lr_mult for lp in solver.net.param.layer if lp.name == "ip"] == [2]
    assert len(solver.test_nets) == 2 and "acc" in solver.test_nets[0].outputs
    assert "acc" not in solver.test_nets[1].outputs
    before = solver.net.params["ip"][0].data.copy()
    solver.solve()
    assert solver.iter == 3 and not np.array_equal(before, solver.net.params["ip"][0].data)


def test_upgrade_net_given_a_solver_points_to_upgrade_solver(tmp_path, capsys):
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "net.prototxt"\nbase_lr: 0.01\nsolver_type: SGD\n')
    assert main(["upgrade-net", str(solver), str(tmp_path / "out.prototxt")]) == 2
    assert f"this is a solver prototxt, not a net; use siamese upgrade-solver {solver} OUT" in capsys.readouterr().err
    assert not (tmp_path / "out.prototxt").exists()
