"""export-onnx: ONNX Runtime's outputs equal the toolkit's forward (1e-5 relative), dynamic and fixed batch."""
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from siamese_cli.cli import main  # noqa: E402
from siamese_cli.export.onnx import net_to_onnx  # noqa: E402
from siamese_cli.layers._geometry import pool_out_size  # noqa: E402
from siamese_cli.io.prototxt import parse_text  # noqa: E402
from siamese_cli.net import Net  # noqa: E402
from siamese_cli.proto import caffe_pb2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TOWER = ROOT / "examples/siamese/mnist_siamese.prototxt"


def conv(name, bottom, num, k, pad=0, stride=1, extra=""):
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" convolution_param {{ '
            f'num_output: {num} kernel_size: {k} pad: {pad} stride: {stride} {extra} }} }}\n'
            f'layer {{ name: "relu_{name}" type: "ReLU" bottom: "{name}" top: "{name}" }}\n')


def fire(name, bottom, squeeze, expand):
    return (conv(f"{name}/squeeze1x1", bottom, squeeze, 1) + conv(f"{name}/expand1x1", f"{name}/squeeze1x1", expand, 1)
            + conv(f"{name}/expand3x3", f"{name}/squeeze1x1", expand, 3, pad=1)
            + f'layer {{ name: "{name}/concat" type: "Concat" bottom: "{name}/expand1x1" '
              f'bottom: "{name}/expand3x3" top: "{name}/concat" }}\n')


def max_pool(name, bottom):
    return (f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" '
            f'pooling_param {{ pool: MAX kernel_size: 3 stride: 2 }} }}\n')


def squeezenet_v11(batch):
    """SqueezeNet v1.1's deploy net (Iandola et al.; DeepScale's deploy.prototxt layout)."""
    text = f'name: "SqueezeNet_v1.1" input: "data" input_shape {{ dim: {batch} dim: 3 dim: 227 dim: 227 }}\n'
    text += conv("conv1", "data", 64, 3, stride=2) + max_pool("pool1", "conv1")
    text += fire("fire2", "pool1", 16, 64) + fire("fire3", "fire2/concat", 16, 64) + max_pool("pool3", "fire3/concat")
    text += fire("fire4", "pool3", 32, 128) + fire("fire5", "fire4/concat", 32, 128)
    text += max_pool("pool5", "fire5/concat")
    text += fire("fire6", "pool5", 48, 192) + fire("fire7", "fire6/concat", 48, 192)
    text += fire("fire8", "fire7/concat", 64, 256) + fire("fire9", "fire8/concat", 64, 256)
    text += ('layer { name: "drop9" type: "Dropout" bottom: "fire9/concat" top: "fire9/concat" '
             'dropout_param { dropout_ratio: 0.5 } }\n')
    text += conv("conv10", "fire9/concat", 1000, 1)
    text += ('layer { name: "pool10" type: "Pooling" bottom: "conv10" top: "pool10" '
             'pooling_param { pool: AVE global_pooling: true } }\n'
             'layer { name: "prob" type: "Softmax" bottom: "pool10" top: "prob" }\n')
    return text


def lenet(batch):
    return (f'name: "LeNet" layer {{ name: "data" type: "Input" top: "data" '
            f'input_param {{ shape {{ dim: {batch} dim: 1 dim: 28 dim: 28 }} }} }}\n'
            'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
            'convolution_param { num_output: 20 kernel_size: 5 stride: 1 } }\n'
            'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
            'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
            'layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2" '
            'convolution_param { num_output: 50 kernel_size: 5 stride: 1 } }\n'
            'layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" '
            'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
            'layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" inner_product_param { num_output: 500 } }\n'
            'layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }\n'
            'layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 10 } }\n'
            'layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }\n')


def every_layer(batch):
    """The layers that exist today, with the awkward settings: groups, dilation, Caffe's clipped ceil pooling
    (AVE with an end pad beyond the pad, MAX whose last window is dropped), axes other than 1, in-place layers,
    blobs read twice (Split), several outputs."""
    layers = [
        ('conv_g', 'Convolution', ['data'], 'convolution_param { num_output: 6 group: 3 kernel_size: 3 pad: 2 '
                                            'dilation: 2 }'),
        ('leaky', 'ReLU', ['conv_g'], 'relu_param { negative_slope: 0.1 }', ['conv_g']),
        ('pool_ave', 'Pooling', ['conv_g'], 'pooling_param { pool: AVE kernel_size: 3 stride: 2 pad: 1 }'),
        ('pool_max', 'Pooling', ['conv_g'], 'pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 2 }'),
        ('cat', 'Concat', ['pool_ave', 'pool_max'], 'concat_param { axis: 3 }'),
        ('slice', 'Slice', ['cat'], 'slice_param { axis: 1 }', ['a', 'b', 'c']),
        ('sig', 'Sigmoid', ['a'], ''),
        ('tanh', 'TanH', ['b'], ''),
        ('pow', 'Power', ['c'], 'power_param { power: 2 scale: 0.5 shift: 1 }'),
        ('sum', 'Eltwise', ['sig', 'tanh', 'pow'], 'eltwise_param { operation: SUM coeff: 1 coeff: -0.5 coeff: 2 }'),
        ('prod', 'Eltwise', ['sig', 'tanh'], 'eltwise_param { operation: PROD }'),
        ('max', 'Eltwise', ['sum', 'prod', 'pow'], 'eltwise_param { operation: MAX }'),
        ('both', 'Concat', ['sum', 'max'], ''),
        ('drop', 'Dropout', ['both'], '', ['both']),
        ('flat', 'Flatten', ['both'], 'flatten_param { axis: 2 }'),
        ('ip_axis2', 'InnerProduct', ['flat'], 'inner_product_param { num_output: 5 axis: 2 }'),
        ('soft2', 'Softmax', ['ip_axis2'], 'softmax_param { axis: 2 }'),
        ('rows', 'Reshape', ['ip_axis2'], 'reshape_param { shape { dim: 0 dim: -1 } }'),
        ('ip', 'InnerProduct', ['rows'], 'inner_product_param { num_output: 6 }'),
        ('prob', 'Softmax', ['ip'], ''),
        ('gmax', 'Pooling', ['max'], 'pooling_param { pool: MAX global_pooling: true }'),
        ('gflat', 'Flatten', ['gmax'], ''),
    ]
    text = f'name: "every_layer" input: "data" input_shape {{ dim: {batch} dim: 3 dim: 12 dim: 13 }}\n'
    for name, kind, bottoms, param, *tops in layers:
        tops = tops[0] if tops else [name]
        text += (f'layer {{ name: "{name}" type: "{kind}" ' + " ".join(f'bottom: "{b}"' for b in bottoms) + " "
                 + " ".join(f'top: "{t}"' for t in tops) + f" {param} }}\n")
    return text


def randomised(text, seed=0):
    """A Net of `text` with He-scaled random weights and small random biases."""
    net = Net(parse_text(text, caffe_pb2.NetParameter()), phase="TEST")
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        weight = blobs[0].data
        weight[...] = rng.standard_normal(weight.shape) * np.sqrt(2.0 / max(weight[0].size, 1))
        for blob in blobs[1:]:
            blob.data[...] = rng.standard_normal(blob.shape) * 0.1
    return net


def run_onnx(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, feeds)))


def assert_same(got, want):
    for name, value in want.items():
        scale = float(np.abs(value).max()) or 1.0
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-5 * scale, err_msg=name)


def check_round_trip(build, input_shape, batch, other_batch, seed=0):
    """Fixed batch at `batch`, dynamic batch run at `other_batch`, both against the engine."""
    net = randomised(build(batch), seed)
    rng = np.random.default_rng(seed + 1)
    name = net.inputs[0]
    x = rng.random((batch,) + input_shape, dtype=np.float32)
    fixed = net_to_onnx(net, dynamic=False)
    dynamic = net_to_onnx(net, dynamic=True)
    assert [i.name for i in fixed.graph.input] == [name]
    assert [o.name for o in fixed.graph.output] == net.outputs
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == batch
    assert dynamic.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    want = net.forward(**{name: x})
    assert_same(run_onnx(fixed, {name: x}), want)
    y = rng.random((other_batch,) + input_shape, dtype=np.float32)
    want = net.forward(**{name: y})
    assert_same(run_onnx(dynamic, {name: y}), want)
    return want


def test_siamese_tower():
    text = TOWER.read_text().replace("dim: 10000", "dim: 4")
    want = check_round_trip(lambda batch: text, (1, 28, 28), 4, 7)
    assert want["feat"].shape == (7, 2)


def test_lenet_classifier():
    want = check_round_trip(lenet, (1, 28, 28), 2, 5)
    np.testing.assert_allclose(want["prob"].sum(axis=1), 1, rtol=1e-5)


def test_squeezenet_v11():
    net_text = squeezenet_v11(1)
    assert net_text.count('type: "Concat"') == 8
    want = check_round_trip(squeezenet_v11, (3, 227, 227), 1, 2)
    assert want["prob"].shape == (2, 1000, 1, 1)


def test_every_layer_of_today():
    want = check_round_trip(every_layer, (3, 12, 13), 2, 3)
    assert set(want) == {"soft2", "prob", "gflat"}
    assert want["soft2"].shape == (3, 4, 5)


def test_caffe_pool_size_drops_a_window_that_starts_in_the_padding():
    assert pool_out_size(113, 3, 2, 0) == 56
    assert pool_out_size(56, 3, 2, 0) == 28  # floor would give 27
    assert pool_out_size(12, 3, 2, 2) == 7  # ceil gives 8, whose window would start at 14 = 12 + 2


def test_cli_writes_a_model_named_after_the_blobs(tmp_path, capsys):
    text = TOWER.read_text()
    net = randomised(text.replace("dim: 10000", "dim: 1"))
    weights, out = tmp_path / "w.caffemodel", tmp_path / "tower.onnx"
    net.save(weights)
    assert main(["export-onnx", "--model", str(TOWER), "--weights", str(weights), "--out", str(out)]) == 0
    assert f"wrote {out}: data [batchx1x28x28] -> feat [batchx2]" in capsys.readouterr().out
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    x = np.random.default_rng(5).random((3, 1, 28, 28), dtype=np.float32)
    assert_same(run_onnx(model, {"data": x}), net.forward(data=x))
    assert main(["export-onnx", "--model", str(TOWER), "--weights", str(weights), "--out", str(out),
                 "--batch", "8", "--opset", "13"]) == 0
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 13
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 8


@pytest.mark.parametrize("args, message", [
    (["--model", "examples/siamese/mnist_siamese_train_test.prototxt"], 'layer "pair_data" (Data) has no ONNX export'),
    (["--model", str(TOWER), "--batch", "zero"], "--batch zero: give 'dynamic' or a positive batch size"),
    (["--model", str(TOWER), "--opset", "11"], "opset 11 is too old for this export; use 13 or newer"),
])
def test_cli_errors_are_one_line(tmp_path, capsys, args, message):
    net = randomised(TOWER.read_text().replace("dim: 10000", "dim: 1"))
    net.save(tmp_path / "w.caffemodel")
    code = main(["export-onnx", "--weights", str(tmp_path / "w.caffemodel"), "--out", str(tmp_path / "x.onnx")]
                + args)
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if not line.startswith("I")]  # glog info: weights copied
    assert code == 2 and message in err and len(lines) == 1
    assert not (tmp_path / "x.onnx").exists()
