"""ONNX forms of BatchNorm, Scale, LRN, Deconvolution, PReLU and ELU, checked before their engine layers exist.

Each converter is run on a one-layer stand-in for a Net (its parameters and blobs in Caffe's
order) and ONNX Runtime's output is compared with Caffe's definition written out here in numpy.
Once the layers are in the engine, tests/test_onnx_export.py can add them to a real net.
"""
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from siamese_cli.errors import SiameseError  # noqa: E402
from siamese_cli.export.onnx import net_to_onnx  # noqa: E402
from siamese_cli.io.prototxt import parse_text  # noqa: E402
from siamese_cli.proto import caffe_pb2  # noqa: E402

RNG = np.random.default_rng(4)


def one_layer(layer_text, inputs, out_shape, blobs=()):
    """(stand-in net, model) for one layer reading the named input arrays' shapes, writing top "y"."""
    param = parse_text(f"layer {{ {layer_text} }}", caffe_pb2.NetParameter())
    shapes = {name: SimpleNamespace(shape=tuple(array.shape)) for name, array in inputs.items()}
    shapes["y"] = SimpleNamespace(shape=tuple(out_shape))
    name = param.layer[0].name
    net = SimpleNamespace(name="one", param=param, inputs=list(inputs), outputs=["y"], blobs=shapes,
                          params={name: [SimpleNamespace(data=np.asarray(b, np.float32)) for b in blobs]})
    return net


def run(net, inputs, dynamic=True):
    model = net_to_onnx(net, dynamic=dynamic)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.astype(np.float32) for k, v in inputs.items()})[0]


def close(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def test_batch_norm_divides_the_stored_statistics_by_the_scale_factor():
    x = RNG.standard_normal((2, 4, 3, 5))
    mean, var, factor = RNG.standard_normal(4) * 5, RNG.random(4) * 8 + 0.5, np.array([2.5])
    net = one_layer('name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { eps: 0.0001 }',
                    {"x": x}, x.shape, [mean, var, factor])
    want = (x - (mean / 2.5)[:, None, None]) / np.sqrt((var / 2.5)[:, None, None] + 1e-4)
    close(run(net, {"x": x}), want)


def test_batch_norm_with_batch_statistics_is_refused():
    x = RNG.standard_normal((2, 4, 3, 5))
    net = one_layer('name: "bn" type: "BatchNorm" bottom: "x" top: "y" batch_norm_param { use_global_stats: false }',
                    {"x": x}, x.shape, [np.zeros(4), np.ones(4), [1.0]])
    with pytest.raises(SiameseError, match='layer "bn" \\(BatchNorm\\): use_global_stats: false'):
        net_to_onnx(net)


def test_scale_with_bias_and_from_a_second_bottom():
    x = RNG.standard_normal((2, 4, 3, 5))
    gamma, beta = RNG.standard_normal(4), RNG.standard_normal(4)
    net = one_layer('name: "sc" type: "Scale" bottom: "x" top: "y" scale_param { bias_term: true }',
                    {"x": x}, x.shape, [gamma, beta])
    close(run(net, {"x": x}), x * gamma[:, None, None] + beta[:, None, None])
    factor = RNG.standard_normal((2, 4))  # axis 0, two axes: one factor per (n, c)
    net = one_layer('name: "sc" type: "Scale" bottom: "x" bottom: "f" top: "y" scale_param { axis: 0 }',
                    {"x": x, "f": factor}, x.shape)
    close(run(net, {"x": x, "f": factor}, dynamic=False), x * factor[:, :, None, None])


def test_lrn_across_channels():
    x = RNG.standard_normal((2, 7, 3, 4))
    size, alpha, beta, k = 5, 0.3, 0.75, 2.0
    net = one_layer(f'name: "n" type: "LRN" bottom: "x" top: "y" lrn_param {{ local_size: {size} alpha: {alpha} '
                    f'beta: {beta} k: {k} }}', {"x": x}, x.shape)
    padded = np.pad(x * x, ((0, 0), (2, 2), (0, 0), (0, 0)))
    window = sum(padded[:, i:i + 7] for i in range(size))
    close(run(net, {"x": x}), x * (k + alpha / size * window) ** -beta)


def test_lrn_within_channel():
    x = RNG.standard_normal((2, 3, 6, 5))
    size, alpha, beta = 3, 0.4, 0.6
    net = one_layer(f'name: "n" type: "LRN" bottom: "x" top: "y" lrn_param {{ local_size: {size} alpha: {alpha} '
                    f'beta: {beta} norm_region: WITHIN_CHANNEL }}', {"x": x}, x.shape)
    padded = np.pad(x * x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    window = sum(padded[:, :, i:i + 6, j:j + 5] for i in range(size) for j in range(size))
    close(run(net, {"x": x}), x * (1 + alpha * window / size ** 2) ** -beta)


@pytest.mark.parametrize("stride, pad, dilation, group", [(2, 1, 1, 2), (1, 0, 2, 1), (3, 2, 1, 1)])
def test_deconvolution_weights_are_c_in_by_c_out_over_group(stride, pad, dilation, group):
    n, c_in, h, w, c_out, k = 2, 4, 5, 4, 6, 3
    x = RNG.standard_normal((n, c_in, h, w))
    weight = RNG.standard_normal((c_in, c_out // group, k, k))
    bias = RNG.standard_normal(c_out)
    oh, ow = (stride * (h - 1) + dilation * (k - 1) + 1 - 2 * pad, stride * (w - 1) + dilation * (k - 1) + 1 - 2 * pad)
    full = np.zeros((n, c_out, stride * (h - 1) + dilation * (k - 1) + 1, stride * (w - 1) + dilation * (k - 1) + 1))
    per_in, per_out = c_in // group, c_out // group
    for c in range(c_in):  # every input pixel adds its kernel, scaled, into the output
        g = c // per_in
        for i in range(h):
            for j in range(w):
                for ki in range(k):
                    for kj in range(k):
                        full[:, g * per_out:(g + 1) * per_out, i * stride + ki * dilation, j * stride + kj * dilation] \
                            += x[:, c, i, j, None] * weight[c, :, ki, kj]
    want = full[:, :, pad:pad + oh, pad:pad + ow] + bias[:, None, None]
    net = one_layer(f'name: "up" type: "Deconvolution" bottom: "x" top: "y" convolution_param {{ num_output: {c_out} '
                    f'kernel_size: {k} stride: {stride} pad: {pad} dilation: {dilation} group: {group} }}',
                    {"x": x}, want.shape, [weight, bias])
    close(run(net, {"x": x}), want)


def test_prelu_per_channel_and_shared():
    x = RNG.standard_normal((2, 3, 4, 4))
    slope = np.array([0.1, -0.2, 0.5])
    net = one_layer('name: "p" type: "PReLU" bottom: "x" top: "y"', {"x": x}, x.shape, [slope])
    close(run(net, {"x": x}), np.where(x > 0, x, x * slope[:, None, None]))
    net = one_layer('name: "p" type: "PReLU" bottom: "x" top: "y" prelu_param { channel_shared: true }',
                    {"x": x}, x.shape, [[0.3]])
    close(run(net, {"x": x}), np.where(x > 0, x, 0.3 * x))


def test_elu():
    x = RNG.standard_normal((3, 5))
    net = one_layer('name: "e" type: "ELU" bottom: "x" top: "y" elu_param { alpha: 0.7 }', {"x": x}, x.shape)
    close(run(net, {"x": x}), np.where(x > 0, x, 0.7 * (np.exp(x) - 1)))


def test_an_unsupported_layer_is_named():
    x = RNG.standard_normal((3, 5))
    net = one_layer('name: "loss" type: "ContrastiveLoss" bottom: "x" top: "y"', {"x": x}, ())
    with pytest.raises(SiameseError, match='layer "loss" \\(ContrastiveLoss\\) has no ONNX export'):
        net_to_onnx(net)
