"""ONNX forms of Caffe's element-wise (neuron) layers: one output value from each input value."""
import math

import numpy as np


def _chain(g, lp, x, steps, tops):
    """Apply (op, constant) steps in turn, the last one writing `tops`; Identity when there are none."""
    if not steps:
        return g.node("Identity", [x], tops, lp.name)
    for k, (op, value) in enumerate(steps):
        out = tops if k == len(steps) - 1 else [g.temp(f"{lp.name}.{op.lower()}")]
        x = g.node(op, [x, g.const(f"{lp.name}.{op.lower()}", value)], out, f"{lp.name}.{op.lower()}")
    return x


def _affine(scale, shift):
    """The steps of scale * x + shift, leaving out a unit scale and a zero shift."""
    return [(op, value) for op, value, skip in (("Mul", scale, 1), ("Add", shift, 0)) if value != skip]


def relu(g, lp, blobs, bottoms, tops):
    slope = lp.relu_param.negative_slope
    if slope:
        g.node("LeakyRelu", bottoms, tops, lp.name, alpha=float(slope))
    else:
        g.node("Relu", bottoms, tops, lp.name)


def prelu(g, lp, blobs, bottoms, tops):
    """PRelu with the per-channel slopes shaped (C, 1, ...) to broadcast over the axes after the channels."""
    slope = blobs[0]
    if not lp.prelu_param.channel_shared:
        rank = len(g.shape(lp.bottom[0]))
        slope = slope.reshape((-1,) + (1,) * max(rank - 2, 0))
    g.node("PRelu", [bottoms[0], g.const(f"{lp.name}.slope", slope)], tops, lp.name)


def unary(op, **attrs):
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
    steps = _affine(p.scale, p.shift) + ([("Pow", p.power)] if p.power != 1 else [])
    _chain(g, lp, x, steps, tops)


def _ln_base(base):
    return 1.0 if base == -1 else math.log(base)


def exp(g, lp, blobs, bottoms, tops):
    """base ^ (shift + scale x) = e ^ (ln(base) shift + ln(base) scale x)."""
    p = lp.exp_param
    ln = _ln_base(p.base)
    steps = _affine(ln * p.scale, ln * p.shift)
    x = _chain(g, lp, bottoms[0], steps, [g.temp(f"{lp.name}.arg")]) if steps else bottoms[0]
    g.node("Exp", [x], tops, lp.name)


def log(g, lp, blobs, bottoms, tops):
    """log_base(shift + scale x) = ln(shift + scale x) / ln(base)."""
    p = lp.log_param
    ln = _ln_base(p.base)
    steps = _affine(p.scale, p.shift)
    x = _chain(g, lp, bottoms[0], steps, [g.temp(f"{lp.name}.arg")]) if steps else bottoms[0]
    if ln == 1:
        g.node("Log", [x], tops, lp.name)
        return
    y = g.node("Log", [x], [g.temp(f"{lp.name}.ln")], lp.name)
    g.node("Mul", [y, g.const(f"{lp.name}.base", 1.0 / ln)], tops, f"{lp.name}.base")


def clip(g, lp, blobs, bottoms, tops):
    p = lp.clip_param
    g.node("Clip", [bottoms[0], g.const(f"{lp.name}.min", np.float32(p.min)), g.const(f"{lp.name}.max", np.float32(p.max))],
           tops, lp.name)


def swish(g, lp, blobs, bottoms, tops):
    """x * sigmoid(beta x)."""
    x, beta = bottoms[0], lp.swish_param.beta
    arg = x if beta == 1 else g.node("Mul", [x, g.const(f"{lp.name}.beta", beta)], [g.temp(f"{lp.name}.bx")],
                                     f"{lp.name}.beta")
    gate = g.node("Sigmoid", [arg], [g.temp(f"{lp.name}.gate")], f"{lp.name}.sigmoid")
    g.node("Mul", [x, gate], tops, lp.name)


def threshold(g, lp, blobs, bottoms, tops):
    """1.0 where x > threshold, else 0.0: Greater, then Cast back to float."""
    from onnx import TensorProto

    above = g.node("Greater", [bottoms[0], g.const(f"{lp.name}.threshold", lp.threshold_param.threshold)],
                   [g.temp(f"{lp.name}.above")], f"{lp.name}.greater")
    g.node("Cast", [above], tops, lp.name, to=TensorProto.FLOAT)


NEURONS = {
    "ReLU": relu, "PReLU": prelu, "ELU": elu, "Sigmoid": unary("Sigmoid"), "TanH": unary("Tanh"),
    "AbsVal": unary("Abs"), "BNLL": unary("Softplus"), "Power": power, "Exp": exp, "Log": log, "Clip": clip,
    "Swish": swish, "Threshold": threshold,
}
