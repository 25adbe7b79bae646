"""A deploy Net as an ONNX model: one small function per Caffe layer type that has an ONNX form.

Each converter reads the layer's parameters and its blobs in Caffe's order
(`net.params[name]`), takes the ONNX names of its bottoms and tops, and adds nodes
to the Graph. The engine knows nothing of this module.
"""
import math

import numpy as np

from ..errors import SiameseError
from .graph import Graph

DEFAULT_OPSET = 17
MIN_OPSET = 13  # Split, Slice, Unsqueeze and Softmax take their current forms from 13 on


def _pair(values, single, h, w, has_hw, default):
    """Caffe's (h, w) from a repeated field (conv) or a single one (pooling), or the _h/_w fields."""
    if has_hw:
        return h, w
    values = list(values) if not isinstance(values, int) else ([values] if single else [])
    if not values:
        return default, default
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])


# ---- layers with weights -------------------------------------------------------------
def _conv_attrs(lp, p):
    kernel = _pair(p.kernel_size, False, p.kernel_h, p.kernel_w, p.HasField("kernel_h"), 0)
    stride = _pair(p.stride, False, p.stride_h, p.stride_w, p.HasField("stride_h"), 1)
    pad = _pair(p.pad, False, p.pad_h, p.pad_w, p.HasField("pad_h"), 0)
    dilation = _pair(p.dilation, False, 0, 0, False, 1)
    if p.axis != 1:
        raise SiameseError(f'layer "{lp.name}" ({lp.type}): axis {p.axis}; ONNX convolutions take channels at axis 1')
    return dict(kernel_shape=list(kernel), strides=list(stride), pads=[pad[0], pad[1], pad[0], pad[1]],
                dilations=list(dilation), group=int(p.group))


def convolution(g, lp, blobs, bottoms, tops):
    """Conv: Caffe's weights are already (C_out, C_in / group, kh, kw)."""
    inputs = bottoms + [g.const(f"{lp.name}.weight", blobs[0])]
    if len(blobs) > 1:
        inputs.append(g.const(f"{lp.name}.bias", blobs[1]))
    g.node("Conv", inputs, tops, lp.name, **_conv_attrs(lp, lp.convolution_param))


def deconvolution(g, lp, blobs, bottoms, tops):
    """ConvTranspose: Caffe's weights are (C_in, C_out / group, kh, kw), ONNX's layout too."""
    inputs = bottoms + [g.const(f"{lp.name}.weight", blobs[0])]
    if len(blobs) > 1:
        inputs.append(g.const(f"{lp.name}.bias", blobs[1]))
    g.node("ConvTranspose", inputs, tops, lp.name, **_conv_attrs(lp, lp.convolution_param))


def inner_product(g, lp, blobs, bottoms, tops):
    """Gemm after a Flatten from `axis` (1), else MatMul + Add over the last, flattened axis."""
    p = lp.inner_product_param
    shape = g.shape(lp.bottom[0])
    axis = p.axis + len(shape) if p.axis < 0 else p.axis
    weight = blobs[0] if p.transpose else blobs[0].T  # (K, num_output)
    bias = blobs[1] if len(blobs) > 1 else None
    x = bottoms[0]
    if axis == 1:
        if len(shape) != 2:
            x = g.node("Flatten", [x], [g.temp(f"{lp.name}.flat")], f"{lp.name}.flatten", axis=1)
        inputs = [x, g.const(f"{lp.name}.weight", np.ascontiguousarray(weight))]
        if bias is not None:
            inputs.append(g.const(f"{lp.name}.bias", bias))
        g.node("Gemm", inputs, tops, lp.name)
        return
    flat = g.ints(f"{lp.name}.shape", [0] * axis + [-1])
    x = g.node("Reshape", [x, flat], [g.temp(f"{lp.name}.flat")], f"{lp.name}.flatten")
    out = [g.temp(f"{lp.name}.matmul")] if bias is not None else tops
    y = g.node("MatMul", [x, g.const(f"{lp.name}.weight", np.ascontiguousarray(weight))], out, lp.name)
    if bias is not None:
        g.node("Add", [y, g.const(f"{lp.name}.bias", bias)], tops, f"{lp.name}.bias")


def _channel_shape(g, lp, values):
    """`values` (C,) as (C, 1, ...) so it broadcasts over the axes after the channels."""
    rank = len(g.shape(lp.bottom[0]))
    return np.asarray(values, np.float32).reshape((-1,) + (1,) * max(rank - 2, 0))


def prelu(g, lp, blobs, bottoms, tops):
    slope = blobs[0] if lp.prelu_param.channel_shared else _channel_shape(g, lp, blobs[0])
    g.node("PRelu", [bottoms[0], g.const(f"{lp.name}.slope", slope)], tops, lp.name)


def batch_norm(g, lp, blobs, bottoms, tops):
    """BatchNormalization with unit scale and zero shift, from Caffe's running sums divided by its scale factor."""
    if lp.batch_norm_param.HasField("use_global_stats") and not lp.batch_norm_param.use_global_stats:
        raise SiameseError(f'layer "{lp.name}" (BatchNorm): use_global_stats: false normalises by the batch; '
                           "a deployed net uses the stored statistics (remove the setting)")
    factor = float(blobs[2].ravel()[0]) if len(blobs) > 2 else 1.0
    factor = 0.0 if factor == 0 else 1.0 / factor
    mean, var = blobs[0] * np.float32(factor), blobs[1] * np.float32(factor)
    channels = len(mean)
    g.node("BatchNormalization",
           bottoms + [g.const(f"{lp.name}.scale", np.ones(channels)), g.const(f"{lp.name}.shift", np.zeros(channels)),
                      g.const(f"{lp.name}.mean", mean), g.const(f"{lp.name}.var", var)],
           tops, lp.name, epsilon=float(lp.batch_norm_param.eps))


def scale(g, lp, blobs, bottoms, tops):
    """Mul (and Add for the bias) with the factors shaped to broadcast from `axis` on."""
    p = lp.scale_param
    rank = len(g.shape(lp.bottom[0]))
    axis = p.axis + rank if p.axis < 0 else p.axis
    if len(bottoms) == 2:
        factor_rank = len(g.shape(lp.bottom[1]))
        trailing = list(range(factor_rank, rank - axis))
        factor = bottoms[1]
        if trailing:
            factor = g.node("Unsqueeze", [factor, g.ints(f"{lp.name}.axes", trailing)],
                            [g.temp(f"{lp.name}.factor")], f"{lp.name}.unsqueeze")
        bias = blobs[0] if p.bias_term and blobs else None
    else:
        weights = blobs[0]
        factor = g.const(f"{lp.name}.scale", weights.reshape(weights.shape + (1,) * (rank - axis - weights.ndim)))
        bias = blobs[1] if p.bias_term and len(blobs) > 1 else None
    out = [g.temp(f"{lp.name}.scaled")] if bias is not None else tops
    y = g.node("Mul", [bottoms[0], factor], out, lp.name)
    if bias is not None:
        bias = bias.reshape(bias.shape + (1,) * (rank - axis - bias.ndim))
        g.node("Add", [y, g.const(f"{lp.name}.bias", bias)], tops, f"{lp.name}.bias")


# ---- pooling and normalisation ---------------------------------------------------------
def caffe_pool_size(size, kernel, stride, pad):
    """Caffe's ceil-mode output size, with the last window dropped when it would start in the padding."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pooling(g, lp, blobs, bottoms, tops):
    """MaxPool / AveragePool with explicit end pads that reproduce Caffe's output size and divisors."""
    p = lp.pooling_param
    if len(tops) > 1:
        raise SiameseError(f'layer "{lp.name}" (Pooling): the argmax top has no ONNX form; drop the second top')
    if p.pool not in (p.MAX, p.AVE):
        raise SiameseError(f'layer "{lp.name}" (Pooling): STOCHASTIC pooling has no ONNX form; use MAX or AVE')
    if p.round_mode != p.CEIL:
        raise SiameseError(f'layer "{lp.name}" (Pooling): round_mode FLOOR is not exported; use CEIL')
    if p.global_pooling:
        g.node("GlobalMaxPool" if p.pool == p.MAX else "GlobalAveragePool", bottoms, tops, lp.name)
        return
    _, _, h, w = g.shape(lp.bottom[0])
    kernel = _pair(p.kernel_size, True, p.kernel_h, p.kernel_w, p.HasField("kernel_h"), 0)
    stride = _pair(p.stride, True, p.stride_h, p.stride_w, p.HasField("stride_h"), 1)
    pad = _pair(p.pad, True, p.pad_h, p.pad_w, p.HasField("pad_h"), 0)
    ends = []
    for size, k, s, q in zip((h, w), kernel, stride, pad):
        out = caffe_pool_size(size, k, s, q)
        end = max((out - 1) * s + k - size - q, 0)
        if (size + q + end - k) // s + 1 != out:
            raise SiameseError(f'layer "{lp.name}" (Pooling): no ONNX padding gives Caffe\'s output size {out}')
        ends.append(end)
    attrs = dict(kernel_shape=list(kernel), strides=list(stride))
    x = bottoms[0]
    if p.pool == p.MAX:
        g.node("MaxPool", [x], tops, lp.name, pads=[pad[0], pad[1], ends[0], ends[1]], **attrs)
        return
    # Caffe divides by the window clipped to the input plus its pads: pad with zeros explicitly,
    # then let AveragePool count only what lies inside that padded input.
    if any(pad):
        pads = g.ints(f"{lp.name}.pads", [0, 0, pad[0], pad[1], 0, 0, pad[0], pad[1]])
        x = g.node("Pad", [x, pads], [g.temp(f"{lp.name}.padded")], f"{lp.name}.pad")
    ends = [max(end - q, 0) for end, q in zip(ends, pad)]
    g.node("AveragePool", [x], tops, lp.name, pads=[0, 0, ends[0], ends[1]], count_include_pad=0, **attrs)


def lrn(g, lp, blobs, bottoms, tops):
    """ACROSS_CHANNELS is ONNX's LRN (alpha / size, k as bias); WITHIN_CHANNEL is built from its parts."""
    p = lp.lrn_param
    if p.norm_region == p.ACROSS_CHANNELS:
        g.node("LRN", bottoms, tops, lp.name, size=int(p.local_size), alpha=float(p.alpha), beta=float(p.beta),
               bias=float(p.k))
        return
    # Caffe: x * (1 + alpha * mean of x^2 over a local_size^2 window, zero padded) ^ -beta
    n, half = int(p.local_size), (int(p.local_size) - 1) // 2
    x = bottoms[0]
    square = g.node("Mul", [x, x], [g.temp(f"{lp.name}.square")], f"{lp.name}.square")
    mean = g.node("AveragePool", [square], [g.temp(f"{lp.name}.mean")], f"{lp.name}.mean", kernel_shape=[n, n],
                  pads=[half] * 4, count_include_pad=1)
    scaled = g.node("Mul", [mean, g.const(f"{lp.name}.alpha", p.alpha)], [g.temp(f"{lp.name}.scaled")],
                    f"{lp.name}.alpha")
    base = g.node("Add", [scaled, g.const(f"{lp.name}.one", 1.0)], [g.temp(f"{lp.name}.base")], f"{lp.name}.one")
    factor = g.node("Pow", [base, g.const(f"{lp.name}.beta", -p.beta)], [g.temp(f"{lp.name}.factor")],
                    f"{lp.name}.pow")
    g.node("Mul", [x, factor], tops, lp.name)


# ---- element-wise ------------------------------------------------------------------------
def relu(g, lp, blobs, bottoms, tops):
    slope = lp.relu_param.negative_slope
    if slope:
        g.node("LeakyRelu", bottoms, tops, lp.name, alpha=float(slope))
    else:
        g.node("Relu", bottoms, tops, lp.name)


def _unary(op, **attrs):
    def convert(g, lp, blobs, bottoms, tops):
        g.node(op, bottoms, tops, lp.name, **attrs)
    convert.__doc__ = f"ONNX {op}."
    return convert


def elu(g, lp, blobs, bottoms, tops):
    g.node("Elu", bottoms, tops, lp.name, alpha=float(lp.elu_param.alpha))


def power(g, lp, blobs, bottoms, tops):
    """(shift + scale x) ^ power as Mul, Add, Pow, leaving out the steps that change nothing."""
    p = lp.power_param
    x = bottoms[0]
    if p.power * p.scale == 0:  # Caffe's constant case
        value = 1.0 if p.power == 0 else p.shift ** p.power
        zero = g.node("Mul", [x, g.const(f"{lp.name}.zero", 0.0)], [g.temp(f"{lp.name}.zero")], f"{lp.name}.zero")
        g.node("Add", [zero, g.const(f"{lp.name}.value", value)], tops, lp.name)
        return
    steps = [(op, value) for op, value, skip in (("Mul", p.scale, 1), ("Add", p.shift, 0), ("Pow", p.power, 1))
             if value != skip]
    if not steps:
        g.node("Identity", [x], tops, lp.name)
    for k, (op, value) in enumerate(steps):
        out = tops if k == len(steps) - 1 else [g.temp(f"{lp.name}.{op.lower()}")]
        x = g.node(op, [x, g.const(f"{lp.name}.{op.lower()}", value)], out, f"{lp.name}.{op.lower()}")


def eltwise(g, lp, blobs, bottoms, tops):
    p = lp.eltwise_param
    if p.operation == p.PROD:
        value = bottoms[0]
        for k, bottom in enumerate(bottoms[1:], 1):
            out = tops if k == len(bottoms) - 1 else [g.temp(f"{lp.name}.prod{k}")]
            value = g.node("Mul", [value, bottom], out, lp.name if k == 1 else f"{lp.name}.{k}")
    elif p.operation == p.MAX:
        g.node("Max", bottoms, tops, lp.name)
    else:
        terms = []
        for k, (bottom, coeff) in enumerate(zip(bottoms, list(p.coeff) or [1.0] * len(bottoms))):
            if coeff != 1:
                bottom = g.node("Mul", [bottom, g.const(f"{lp.name}.coeff{k}", coeff)],
                                [g.temp(f"{lp.name}.term{k}")], f"{lp.name}.coeff{k}")
            terms.append(bottom)
        g.node("Sum", terms, tops, lp.name)


# ---- shapes and routing ------------------------------------------------------------------
def _axis(axis, rank):
    return axis + rank if axis < 0 else axis


def concat(g, lp, blobs, bottoms, tops):
    p = lp.concat_param
    axis = p.concat_dim if p.HasField("concat_dim") else _axis(p.axis, len(g.shape(lp.bottom[0])))
    g.node("Concat", bottoms, tops, lp.name, axis=int(axis))


def slice_layer(g, lp, blobs, bottoms, tops):
    """Split with the part sizes Caffe's slice points give."""
    p = lp.slice_param
    shape = g.shape(lp.bottom[0])
    axis = p.slice_dim if p.HasField("slice_dim") else _axis(p.axis, len(shape))
    bounds = [0] + [int(v) for v in p.slice_point] + [shape[axis]]
    sizes = [b - a for a, b in zip(bounds, bounds[1:])] if p.slice_point else [shape[axis] // len(tops)] * len(tops)
    g.node("Split", [bottoms[0], g.ints(f"{lp.name}.sizes", sizes)], tops, lp.name, axis=int(axis))


def identity(g, lp, blobs, bottoms, tops):
    """Caffe's Split (copies for several readers) and TEST-phase Dropout."""
    for k, top in enumerate(tops):
        g.node("Identity", [bottoms[0]], [top], lp.name if k == 0 else f"{lp.name}.{k}")


def flatten(g, lp, blobs, bottoms, tops):
    p = lp.flatten_param
    rank = len(g.shape(lp.bottom[0]))
    start, end = _axis(p.axis, rank), _axis(p.end_axis, rank)
    if start == 1 and end == rank - 1:
        g.node("Flatten", bottoms, tops, lp.name, axis=1)
        return
    target = [0] * start + [-1] + list(g.shape(lp.bottom[0])[end + 1:])
    g.node("Reshape", [bottoms[0], g.ints(f"{lp.name}.shape", target)], tops, lp.name)


def reshape(g, lp, blobs, bottoms, tops):
    """Reshape to the top's shape, the batch left to copy (0) or infer (-1) when the export's batch is dynamic."""
    p = lp.reshape_param
    dims = [int(d) for d in p.shape.dim]
    target = list(g.shape(lp.top[0]))
    start = p.axis if p.axis >= 0 else len(g.shape(lp.bottom[0])) + p.axis + 1
    if start > 0 or (dims and dims[0] == 0):
        target[0] = 0
    elif -1 in dims:
        target[dims.index(-1)] = -1
    elif g.dynamic:
        raise SiameseError(f'layer "{lp.name}" (Reshape): sets the batch dimension to {dims[0]}; '
                           "export with a fixed batch (--batch N)")
    g.node("Reshape", [bottoms[0], g.ints(f"{lp.name}.shape", target)], tops, lp.name)


def softmax(g, lp, blobs, bottoms, tops):
    g.node("Softmax", bottoms, tops, lp.name, axis=int(_axis(lp.softmax_param.axis, len(g.shape(lp.bottom[0])))))


CONVERTERS = {
    "Convolution": convolution, "Deconvolution": deconvolution, "InnerProduct": inner_product,
    "Pooling": pooling, "LRN": lrn, "BatchNorm": batch_norm, "Scale": scale,
    "ReLU": relu, "PReLU": prelu, "Sigmoid": _unary("Sigmoid"), "TanH": _unary("Tanh"), "ELU": elu,
    "AbsVal": _unary("Abs"), "Power": power, "Eltwise": eltwise, "Concat": concat, "Slice": slice_layer,
    "Split": identity, "Dropout": identity, "Flatten": flatten, "Reshape": reshape, "Softmax": softmax,
}
#: Layers that only feed data in or score a training net; a deploy net's inputs become graph inputs.
SKIPPED = {"Input"}


def check_supported(net_param):
    """Fail before any work when a layer has no ONNX form, naming it."""
    for lp in net_param.layer:
        if lp.type not in CONVERTERS and lp.type not in SKIPPED:
            raise SiameseError(f'layer "{lp.name}" ({lp.type}) has no ONNX export; supported types: '
                               f'{", ".join(sorted(CONVERTERS))}. Export the deploy net, without data or loss layers')


def net_to_onnx(net, opset=DEFAULT_OPSET, dynamic=True):
    """The onnx.ModelProto of `net`'s TEST-phase forward pass, checked by onnx.checker."""
    import onnx

    if opset < MIN_OPSET:
        raise SiameseError(f"opset {opset} is too old for this export; use {MIN_OPSET} or newer")
    check_supported(net.param)
    g = Graph(net, dynamic)
    for index, lp in enumerate(net.param.layer):
        if lp.type in SKIPPED:
            continue
        blobs = [blob.data.copy() for blob in net.params.get(lp.name, [])]
        tops = g.tops(index, lp)
        CONVERTERS[lp.type](g, lp, blobs, g.bottoms(lp), tops)
        g.commit(lp, tops)
    model = g.model(opset, producer="siamese")
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0]
        raise SiameseError(f'net "{net.name}": the ONNX graph does not validate: {first}') from None
    return model


__all__ = ["CONVERTERS", "DEFAULT_OPSET", "check_supported", "net_to_onnx"]
