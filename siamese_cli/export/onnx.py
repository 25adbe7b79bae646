"""A deploy Net as an ONNX model: one small function per Caffe layer type that has an ONNX form.

Layers with weights, pooling and normalisation are here; element-wise layers in neurons.py,
routing, reshaping and reducing ones in routing.py. Each converter reads the layer's parameters and its blobs in Caffe's order
(`net.params[name]`), takes the ONNX names of its bottoms and tops, and adds nodes
to the Graph. The engine knows nothing of this module.
"""
import numpy as np

from ..errors import SiameseError
from ..layers._geometry import conv_geometry, pool_geometry, pool_out_size
from .graph import Graph, canonical_axis
from .neurons import NEURONS
from .routing import ROUTING

DEFAULT_OPSET = 17
MIN_OPSET = 13  # Split, Slice, Unsqueeze and Softmax take their current forms from 13 on


class _Where:
    """Names the layer in geometry errors, as the engine's layers do."""

    def __init__(self, lp):
        self.lp = lp

    def error(self, message):
        return SiameseError(f'layer "{self.lp.name}" ({self.lp.type}): {message}')


# ---- layers with weights -------------------------------------------------------------
def _conv_attrs(lp, p):
    kernel, stride, pad, dilation = conv_geometry(_Where(lp), p)
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
    """Gemm after a Flatten from `axis` (1), else MatMul + Add over the last, flattened axis.
    Gemm reads Caffe's (num_output, K) weights as they are (transB), sparing a copy of large layers."""
    p = lp.inner_product_param
    shape = g.shape(lp.bottom[0])
    axis = canonical_axis(p.axis, len(shape))
    bias = blobs[1] if len(blobs) > 1 else None
    x = bottoms[0]
    if axis == 1:
        if len(shape) != 2:
            x = g.node("Flatten", [x], [g.temp(f"{lp.name}.flat")], f"{lp.name}.flatten", axis=1)
        inputs = [x, g.const(f"{lp.name}.weight", blobs[0])]
        if bias is not None:
            inputs.append(g.const(f"{lp.name}.bias", bias))
        g.node("Gemm", inputs, tops, lp.name, transB=0 if p.transpose else 1)
        return
    weight = blobs[0] if p.transpose else np.ascontiguousarray(blobs[0].T)  # (K, num_output)
    flat = g.ints(f"{lp.name}.shape", [0] * axis + [-1])
    x = g.node("Reshape", [x, flat], [g.temp(f"{lp.name}.flat")], f"{lp.name}.flatten")
    out = [g.temp(f"{lp.name}.matmul")] if bias is not None else tops
    y = g.node("MatMul", [x, g.const(f"{lp.name}.weight", weight)], out, lp.name)
    if bias is not None:
        g.node("Add", [y, g.const(f"{lp.name}.bias", bias)], tops, f"{lp.name}.bias")


def embed(g, lp, blobs, bottoms, tops):
    """Gather of the (input_dim, num_output) table's rows at the bottom's values, cast to indices."""
    from onnx import TensorProto

    index = g.node("Cast", bottoms, [g.temp(f"{lp.name}.index")], f"{lp.name}.cast", to=TensorProto.INT64)
    with_bias = len(blobs) > 1
    y = g.node("Gather", [g.const(f"{lp.name}.weight", blobs[0]), index],
               [g.temp(f"{lp.name}.rows")] if with_bias else tops, lp.name, axis=0)
    if with_bias:
        g.node("Add", [y, g.const(f"{lp.name}.bias", blobs[1])], tops, f"{lp.name}.bias")


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


def _laid_out(g, lp, axis, array):
    """A learned blob of Scale or Bias with trailing unit axes, so that ONNX's right-aligned broadcasting
    lays it over bottom 0 from `axis` on, as Caffe's (outer, dim, inner) layout does."""
    rank = len(g.shape(lp.bottom[0]))
    axis = 0 if array.ndim == 0 else canonical_axis(axis, rank)
    return array.reshape(array.shape + (1,) * (rank - axis - array.ndim))


def _second_bottom(g, lp, axis, bottom):
    """The operand given as bottom 1, unsqueezed at the end like a learned blob."""
    rank, operand_rank = len(g.shape(lp.bottom[0])), len(g.shape(lp.bottom[1]))
    axis = 0 if operand_rank == 0 else canonical_axis(axis, rank)
    trailing = list(range(operand_rank, rank - axis))
    if not trailing:
        return bottom
    return g.node("Unsqueeze", [bottom, g.ints(f"{lp.name}.axes", trailing)], [g.temp(f"{lp.name}.operand")],
                  f"{lp.name}.unsqueeze")


def scale(g, lp, blobs, bottoms, tops):
    """Mul by the learned factor or the second bottom, then Add the learned bias (blobs: [scale,] bias)."""
    p = lp.scale_param
    if len(bottoms) == 2:
        factor = _second_bottom(g, lp, p.axis, bottoms[1])
    else:
        factor, blobs = g.const(f"{lp.name}.scale", _laid_out(g, lp, p.axis, blobs[0])), blobs[1:]
    with_bias = p.bias_term and blobs
    y = g.node("Mul", [bottoms[0], factor], [g.temp(f"{lp.name}.scaled")] if with_bias else tops, lp.name)
    if with_bias:
        g.node("Add", [y, g.const(f"{lp.name}.bias", _laid_out(g, lp, p.axis, blobs[0]))], tops, f"{lp.name}.bias")


def bias(g, lp, blobs, bottoms, tops):
    p = lp.bias_param
    if len(bottoms) == 2:
        operand = _second_bottom(g, lp, p.axis, bottoms[1])
    else:
        operand = g.const(f"{lp.name}.bias", _laid_out(g, lp, p.axis, blobs[0]))
    g.node("Add", [bottoms[0], operand], tops, lp.name)


# ---- pooling and normalisation ---------------------------------------------------------
def pooling(g, lp, blobs, bottoms, tops):
    """MaxPool / AveragePool with explicit end pads that reproduce Caffe's output size and divisors."""
    p = lp.pooling_param
    if len(tops) > 1:
        raise SiameseError(f'layer "{lp.name}" (Pooling): the argmax top has no ONNX form; drop the second top')
    if p.pool not in (p.MAX, p.AVE):
        raise SiameseError(f'layer "{lp.name}" (Pooling): STOCHASTIC pooling has no ONNX form; use MAX or AVE')
    if p.global_pooling:
        g.node("GlobalMaxPool" if p.pool == p.MAX else "GlobalAveragePool", bottoms, tops, lp.name)
        return
    _, _, h, w = g.shape(lp.bottom[0])
    kernel, stride, pad = pool_geometry(_Where(lp), p)
    ends = []
    for size, k, s, q in zip((h, w), kernel, stride, pad):
        out = pool_out_size(size, k, s, q, p.round_mode == p.CEIL)
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


def mvn(g, lp, blobs, bottoms, tops):
    """(x - mean) [/ (std + eps)] over each sample (across_channels) or each (sample, channel) slice,
    the slice flattened into one axis and the result reshaped back."""
    p = lp.mvn_param
    shape = g.shape(lp.bottom[0])
    rows = [0, -1] if p.across_channels or len(shape) < 2 else [0, shape[1], -1]
    last = len(rows) - 1
    x = g.node("Reshape", [bottoms[0], g.ints(f"{lp.name}.rows", rows)], [g.temp(f"{lp.name}.rows")],
               f"{lp.name}.rows")
    mean = g.reduce("ReduceMean", x, [last], [g.temp(f"{lp.name}.mean")], f"{lp.name}.mean")
    y = g.node("Sub", [x, mean], [g.temp(f"{lp.name}.centred")], f"{lp.name}.centre")
    if p.normalize_variance:
        square = g.node("Mul", [y, y], [g.temp(f"{lp.name}.square")], f"{lp.name}.square")
        var = g.reduce("ReduceMean", square, [last], [g.temp(f"{lp.name}.var")], f"{lp.name}.var")
        std = g.node("Sqrt", [var], [g.temp(f"{lp.name}.std")], f"{lp.name}.sqrt")
        std = g.node("Add", [std, g.const(f"{lp.name}.eps", p.eps)], [g.temp(f"{lp.name}.std_eps")],
                     f"{lp.name}.eps")
        y = g.node("Div", [y, std], [g.temp(f"{lp.name}.normalised")], f"{lp.name}.divide")
    g.node("Reshape", [y, g.ints(f"{lp.name}.shape", [0] + list(shape[1:]))], tops, lp.name)


CONVERTERS = {
    "Convolution": convolution, "Deconvolution": deconvolution, "InnerProduct": inner_product, "Embed": embed,
    "BatchNorm": batch_norm, "Scale": scale, "Bias": bias, "Pooling": pooling, "LRN": lrn, "MVN": mvn,
    **NEURONS, **ROUTING,
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
    g = Graph(net, dynamic, opset)
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
