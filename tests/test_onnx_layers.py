"""export-onnx, layer by layer: small nets built by the engine, exported, run by ONNX Runtime.

Every output must equal the engine's forward to 1e-5 relative, for a fixed batch and (where the
layer does not reach across the batch) for a dynamic batch run at another size. Where the ONNX form
is a composition (BatchNorm's stored sums, LRN, Deconvolution's layout, ...) the output is also
checked against Caffe's definition written out here.
"""
import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from siamese_cli.errors import SiameseError  # noqa: E402
from siamese_cli.export.onnx import net_to_onnx  # noqa: E402
from siamese_cli.io.prototxt import parse_text  # noqa: E402
from siamese_cli.net import Net  # noqa: E402
from siamese_cli.proto import caffe_pb2  # noqa: E402


def build(layers, inputs, blobs=None, seed=0):
    """A TEST-phase Net of an Input layer with `inputs` {name: shape} and `layers` (prototxt text);
    `blobs` {layer: [arrays]} replace the filled parameters, the others get random values."""
    shapes = " ".join("shape { " + " ".join(f"dim: {d}" for d in shape) + " }" for shape in inputs.values())
    tops = " ".join(f'top: "{name}"' for name in inputs)
    text = f'name: "t" layer {{ name: "in" type: "Input" {tops} input_param {{ {shapes} }} }}\n{layers}'
    net = Net(parse_text(text, caffe_pb2.NetParameter()), phase="TEST")
    rng = np.random.default_rng(seed)
    for name, params in net.params.items():
        for k, blob in enumerate(params):
            given = (blobs or {}).get(name)
            blob.data[...] = given[k] if given is not None else rng.standard_normal(blob.shape)
    return net


def feeds_for(net, batch=None, seed=1, low=-3.0, high=3.0):
    """Uniform inputs of the net's shapes, or with `batch` as every input's first axis."""
    rng = np.random.default_rng(seed)
    shapes = {name: net.blobs[name].shape for name in net.inputs}
    if batch:
        shapes = {name: (batch,) + shape[1:] for name, shape in shapes.items()}
    return {name: rng.uniform(low, high, shape).astype(np.float32) for name, shape in shapes.items()}


def run_onnx(model, feeds):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def close(got, want, what=""):
    scale = float(np.abs(want).max()) if np.size(want) else 1.0
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * (scale or 1.0), err_msg=what)


def round_trip(net, dynamic_batch=3, low=-3.0, high=3.0):
    """Fixed batch (the net's own), then a dynamic export at `dynamic_batch` (None: fixed only); the
    engine's outputs of the fixed run."""
    feeds = feeds_for(net, low=low, high=high)
    want = net.forward(**feeds)
    got = run_onnx(net_to_onnx(net, dynamic=False), feeds)
    assert list(got) == net.outputs
    for name in want:
        close(got[name], want[name], name)
    if dynamic_batch:
        model = net_to_onnx(net, dynamic=True)
        other = feeds_for(net, dynamic_batch, seed=2, low=low, high=high)
        later = net.forward(**other)
        got_later = run_onnx(model, other)
        for name in later:
            close(got_later[name], later[name], f"{name}, dynamic batch")
        net.forward(**feeds)
    return feeds, want


def layer(name, kind, bottoms, param="", tops=None):
    bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
    tops = [name] if tops is None else tops
    return (f'layer {{ name: "{name}" type: "{kind}" ' + " ".join(f'bottom: "{b}"' for b in bottoms) + " "
            + " ".join(f'top: "{t}"' for t in tops) + f" {param} }}\n")


RNG = np.random.default_rng(4)


# ---- BatchNorm and Scale ----------------------------------------------------------------
@pytest.mark.parametrize("shape, setting", [((2, 4, 3, 5), "use_global_stats: true"), ((2, 4), "")])
def test_batch_norm_divides_the_stored_sums_by_the_scale_factor(shape, setting):
    channels = shape[1]
    mean, var = RNG.standard_normal(channels) * 5, RNG.random(channels) * 8 + 0.5
    net = build(layer("bn", "BatchNorm", "x", f"batch_norm_param {{ eps: 0.0001 {setting} }}"), {"x": shape},
                {"bn": [mean, var, [2.5]]})
    feeds, want = round_trip(net)
    trailing = (1,) * (len(shape) - 2)
    reference = (feeds["x"] - (mean / 2.5).reshape((-1,) + trailing)) / np.sqrt((var / 2.5).reshape((-1,) + trailing)
                                                                                 + 1e-4)
    close(want["bn"], reference)


def test_batch_norm_then_scale_in_place_as_the_zoo_writes_them():
    text = (layer("conv", "Convolution", "x", "convolution_param { num_output: 6 kernel_size: 3 bias_term: false }")
            + layer("bn", "BatchNorm", "conv", "batch_norm_param { use_global_stats: true }", ["conv"])
            + layer("sc", "Scale", "conv", "scale_param { bias_term: true }", ["conv"])
            + layer("relu", "ReLU", "conv", "", ["conv"]))
    net = build(text, {"x": (2, 3, 7, 6)}, {"bn": [RNG.standard_normal(6), RNG.random(6) + 0.2, [0.5]]})
    round_trip(net)


def test_batch_norm_with_batch_statistics_is_refused():
    net = build(layer("bn", "BatchNorm", "x", "batch_norm_param { use_global_stats: false }"), {"x": (2, 4, 3, 5)},
                {"bn": [np.zeros(4), np.ones(4), [1.0]]})
    with pytest.raises(SiameseError, match='layer "bn" \\(BatchNorm\\): use_global_stats: false'):
        net_to_onnx(net)


@pytest.mark.parametrize("param", ["scale_param { bias_term: true }", "scale_param { axis: 1 num_axes: 2 }",
                                   "scale_param { axis: -1 bias_term: true }", "scale_param { num_axes: 0 }"])
def test_scale_with_a_learned_factor(param):
    round_trip(build(layer("sc", "Scale", "x", param), {"x": (2, 4, 3, 5)}))


def test_scale_by_a_second_bottom_and_its_bias():
    x = RNG.standard_normal((2, 4, 3, 5))
    factor, beta = RNG.standard_normal((2, 4)), RNG.standard_normal((2, 4))
    net = build(layer("sc", "Scale", ["x", "f"], "scale_param { axis: 0 bias_term: true }"),
                {"x": x.shape, "f": factor.shape}, {"sc": [beta]})
    feeds = {"x": x.astype(np.float32), "f": factor.astype(np.float32)}
    got = run_onnx(net_to_onnx(net, dynamic=False), feeds)["sc"]
    close(got, net.forward(**feeds)["sc"])
    close(got, x * factor[:, :, None, None] + beta[:, :, None, None])
    net = build(layer("sc", "Scale", ["x", "f"], "scale_param { axis: 1 }"), {"x": (2, 4, 3, 5), "f": (4, 3)})
    round_trip(net, dynamic_batch=None)


@pytest.mark.parametrize("param, bottoms, inputs", [
    ("", ["x"], {"x": (2, 4, 3, 5)}),
    ("bias_param { axis: 2 num_axes: 2 }", ["x"], {"x": (2, 4, 3, 5)}),
    ("bias_param { axis: 1 }", ["x", "b"], {"x": (2, 4, 3, 5), "b": (4, 3)}),
])
def test_bias(param, bottoms, inputs):
    round_trip(build(layer("add", "Bias", bottoms, param), inputs), dynamic_batch=None if len(bottoms) > 1 else 3)


# ---- LRN ---------------------------------------------------------------------------------
def test_lrn_across_channels():
    size, alpha, beta, k = 5, 0.3, 0.75, 2.0
    net = build(layer("n", "LRN", "x", f"lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} k: {k} }}"),
                {"x": (2, 7, 3, 4)})
    feeds, want = round_trip(net)
    x = feeds["x"].astype(np.float64)
    padded = np.pad(x * x, ((0, 0), (2, 2), (0, 0), (0, 0)))
    window = sum(padded[:, i:i + 7] for i in range(size))
    close(want["n"], x * (k + alpha / size * window) ** -beta)


def test_lrn_within_channel():
    size, alpha, beta = 3, 0.4, 0.6
    net = build(layer("n", "LRN", "x", f"lrn_param {{ local_size: {size} alpha: {alpha} beta: {beta} "
                                       "norm_region: WITHIN_CHANNEL }"), {"x": (2, 3, 6, 5)})
    feeds, want = round_trip(net)
    x = feeds["x"].astype(np.float64)
    padded = np.pad(x * x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    window = sum(padded[:, :, i:i + 6, j:j + 5] for i in range(size) for j in range(size))
    close(want["n"], x * (1 + alpha * window / size ** 2) ** -beta)


# ---- convolutions ------------------------------------------------------------------------
@pytest.mark.parametrize("stride, pad, dilation, group", [(2, 1, 1, 2), (1, 0, 2, 1), (3, 2, 1, 1), (2, 1, 2, 4)])
def test_deconvolution_weights_are_c_in_by_c_out_over_group(stride, pad, dilation, group):
    n, c_in, h, w, c_out, k = 2, 4, 5, 4, 8, 3
    weight, bias = RNG.standard_normal((c_in, c_out // group, k, k)), RNG.standard_normal(c_out)
    net = build(layer("up", "Deconvolution", "x", f"convolution_param {{ num_output: {c_out} kernel_size: {k} "
                      f"stride: {stride} pad: {pad} dilation: {dilation} group: {group} }}"),
                {"x": (n, c_in, h, w)}, {"up": [weight, bias]})
    feeds, want = round_trip(net)
    x = feeds["x"].astype(np.float64)
    span = (stride * (h - 1) + dilation * (k - 1) + 1, stride * (w - 1) + dilation * (k - 1) + 1)
    full = np.zeros((n, c_out) + span)
    per_in, per_out = c_in // group, c_out // group
    for c in range(c_in):  # every input pixel adds its kernel, scaled, into the output
        g = c // per_in
        for ki in range(k):
            for kj in range(k):
                rows = slice(ki * dilation, ki * dilation + stride * (h - 1) + 1, stride)
                cols = slice(kj * dilation, kj * dilation + stride * (w - 1) + 1, stride)
                full[:, g * per_out:(g + 1) * per_out, rows, cols] += x[:, c, None] * weight[c, :, ki, kj, None, None]
    reference = full[:, :, pad:span[0] - pad, pad:span[1] - pad] + bias[:, None, None]
    assert want["up"].shape == reference.shape
    close(want["up"], reference)


@pytest.mark.parametrize("param", [
    "num_output: 6 group: 2 kernel_size: 3 pad: 1",                    # grouped
    "num_output: 8 group: 8 kernel_size: 3 pad: 1 stride: 2",          # depthwise, as MobileNet
    "num_output: 16 group: 8 kernel_size: 3 dilation: 2 bias_term: false",  # depthwise, two filters a channel
    "num_output: 8 group: 4 kernel_h: 3 kernel_w: 1 stride_h: 2 stride_w: 1 pad_h: 0 pad_w: 1",
])
def test_grouped_and_depthwise_convolution(param):
    round_trip(build(layer("conv", "Convolution", "x", f"convolution_param {{ {param} }}"), {"x": (2, 8, 9, 7)}))


# ---- element-wise ------------------------------------------------------------------------
def test_prelu_per_channel_and_shared():
    slope = np.array([0.1, -0.2, 0.5])
    feeds, want = round_trip(build(layer("p", "PReLU", "x"), {"x": (2, 3, 4, 4)}, {"p": [slope]}))
    close(want["p"], np.where(feeds["x"] > 0, feeds["x"], feeds["x"] * slope[:, None, None]))
    feeds, want = round_trip(build(layer("p", "PReLU", "x", "prelu_param { channel_shared: true }"),
                                   {"x": (2, 3, 4, 4)}, {"p": [np.float32(0.3)]}))
    close(want["p"], np.where(feeds["x"] > 0, feeds["x"], 0.3 * feeds["x"]))


def test_elu():
    feeds, want = round_trip(build(layer("e", "ELU", "x", "elu_param { alpha: 0.7 }"), {"x": (3, 5)}))
    x = feeds["x"].astype(np.float64)
    close(want["e"], np.where(x > 0, x, 0.7 * np.expm1(x)))


@pytest.mark.parametrize("kind, param", [
    ("Exp", ""), ("Exp", "exp_param { base: 2 scale: 0.5 shift: -1 }"), ("Exp", "exp_param { scale: -0.3 }"),
    ("Log", "log_param { scale: 2 shift: 7 }"), ("Log", "log_param { base: 10 shift: 3.5 }"),
    ("Clip", "clip_param { min: -1 max: 0.5 }"), ("Swish", ""), ("Swish", "swish_param { beta: 0.5 }"),
    ("Threshold", "threshold_param { threshold: 0.25 }"), ("AbsVal", ""), ("BNLL", ""),
    ("Power", "power_param { power: 2 scale: 0.5 shift: 1 }"), ("Power", "power_param { power: 0 }"),
    ("Sigmoid", ""), ("TanH", ""), ("ReLU", "relu_param { negative_slope: 0.1 }"),
])
def test_neuron_layers(kind, param):
    feeds, want = round_trip(build(layer("y", kind, "x", param), {"x": (2, 3, 4, 5)}))
    assert np.isfinite(want["y"]).all()


def test_bnll_does_not_overflow():
    net = build(layer("y", "BNLL", "x"), {"x": (2, 50)})
    feeds, want = round_trip(net, low=-90, high=90)
    close(want["y"], np.maximum(feeds["x"], 0) + np.log1p(np.exp(-np.abs(feeds["x"]))))


# ---- shapes and reductions ---------------------------------------------------------------
@pytest.mark.parametrize("param, shape", [
    ("operation: SUM axis: 1", (2,)), ("operation: ASUM axis: 2 coeff: -0.5", (2, 3)),
    ("operation: SUMSQ axis: -1", (2, 3, 4)), ("operation: MEAN axis: 1 coeff: 3", (2,)),
    ("operation: MEAN", ()), ("", ()),
])
def test_reduction(param, shape):
    _, want = round_trip(build(layer("r", "Reduction", "x", f"reduction_param {{ {param} }}"), {"x": (2, 3, 4, 5)}))
    assert want["r"].shape == shape


def test_reduction_with_the_older_opset():
    net = build(layer("r", "Reduction", "x", "reduction_param { operation: SUMSQ axis: 1 }"), {"x": (2, 3, 4)})
    x = feeds_for(net)["x"]
    close(run_onnx(net_to_onnx(net, opset=13), {"x": x})["r"], net.forward(x=x)["r"])


@pytest.mark.parametrize("param", ["tile_param { axis: 1 tiles: 3 }", "tile_param { axis: -1 tiles: 2 }"])
def test_tile(param):
    round_trip(build(layer("t", "Tile", "x", param), {"x": (2, 3, 4)}))


@pytest.mark.parametrize("param, reference", [
    ("crop_param { axis: 2 offset: 1 offset: 2 }", (2, 3, 4, 3)),
    ("crop_param { axis: 1 offset: 1 }", (2, 2, 4, 3)),
    ("", (2, 3, 4, 3)),
])
def test_crop(param, reference):
    text = layer("c", "Crop", ["x", "ref"], param) + layer("quiet", "Silence", "ref", tops=[])
    feeds, want = round_trip(build(text, {"x": (2, 3, 6, 6), "ref": reference}), dynamic_batch=None)
    assert want["c"].shape == reference


def test_crop_of_the_batch_axis_needs_a_fixed_batch():
    net = build(layer("c", "Crop", ["x", "ref"], "crop_param { axis: 0 }"), {"x": (3, 2), "ref": (2, 2)})
    with pytest.raises(SiameseError, match='layer "c" \\(Crop\\): crops the batch axis'):
        net_to_onnx(net, dynamic=True)
    round_trip(net, dynamic_batch=None)


@pytest.mark.parametrize("param", ["", "mvn_param { normalize_variance: false }",
                                   "mvn_param { across_channels: true eps: 0.01 }"])
def test_mvn(param):
    feeds, want = round_trip(build(layer("m", "MVN", "x", param), {"x": (2, 3, 4, 5)}))
    if not param:
        x = feeds["x"].astype(np.float64)
        centred = x - x.mean(axis=(2, 3), keepdims=True)
        close(want["m"], centred / (np.sqrt((centred ** 2).mean(axis=(2, 3), keepdims=True)) + 1e-9))


# ---- what has no ONNX form ---------------------------------------------------------------
@pytest.mark.parametrize("text, name, kind", [
    (layer("spp", "SPP", "x", "spp_param { pyramid_height: 2 }"), "spp", "SPP"),
    (layer("loss", "EuclideanLoss", ["x", "x2"]), "loss", "EuclideanLoss"),
])
def test_an_unsupported_layer_is_named(text, name, kind):
    net = build(text, {"x": (2, 3, 4, 4), "x2": (2, 3, 4, 4)})
    with pytest.raises(SiameseError, match=f'layer "{name}" \\({kind}\\) has no ONNX export'):
        net_to_onnx(net)


@pytest.mark.parametrize("param", ["num_output: 5", "num_output: 5 transpose: true", "num_output: 5 axis: 2",
                                   "num_output: 5 axis: 2 transpose: true bias_term: false"])
def test_inner_product_weights_either_way_round(param):
    round_trip(build(layer("ip", "InnerProduct", "x", f"inner_product_param {{ {param} }}"), {"x": (2, 3, 4, 2)}))


@pytest.mark.parametrize("param", [
    "pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR", "pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR",
    "pool: AVE kernel_size: 2 stride: 3 pad: 1", "pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 0",
    "pool: AVE kernel_h: 4 kernel_w: 3 stride: 3 pad_h: 2 pad_w: 1", "pool: AVE global_pooling: true",
    "pool: MAX kernel_size: 7",
])
def test_pooling_sizes_and_divisors(param):
    round_trip(build(layer("pool", "Pooling", "x", f"pooling_param {{ {param} }}"), {"x": (2, 3, 8, 7)}))


@pytest.mark.parametrize("param", ["top_k: 3", "top_k: 2 out_max_val: true", "axis: 1 top_k: 2",
                                   "axis: -1 top_k: 3 out_max_val: true", ""])
def test_argmax_ranks_equal_values_by_the_higher_index_as_caffe(param):
    net = build(layer("relu", "ReLU", "x") + layer("top", "ArgMax", "relu", f"argmax_param {{ {param} }}"),
                {"x": (2, 4, 3, 5)})
    _, want = round_trip(net)  # about half the ReLU outputs are 0: ties everywhere
    assert np.isfinite(want["top"]).all()


def test_embed_looks_up_rows():
    net = build(layer("emb", "Embed", "x", "embed_param { num_output: 4 input_dim: 7 }"), {"x": (2, 3)})
    feeds = {"x": np.array([[0, 6, 3], [2, 2, 5]], np.float32)}
    want = net.forward(**feeds)["emb"]
    close(run_onnx(net_to_onnx(net), feeds)["emb"], want)
    close(want, net.params["emb"][0].data[feeds["x"].astype(int)] + net.params["emb"][1].data)
