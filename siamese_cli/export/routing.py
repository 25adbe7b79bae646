"""ONNX forms of Caffe's layers that combine, split, reshape or reduce blobs without weights."""
import numpy as np

from ..errors import SiameseError
from ..proto import caffe_pb2
from .graph import canonical_axis as _axis


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


def tile(g, lp, blobs, bottoms, tops):
    p = lp.tile_param
    repeats = [1] * len(g.shape(lp.bottom[0]))
    repeats[_axis(p.axis, len(repeats))] = int(p.tiles)
    g.node("Tile", [bottoms[0], g.ints(f"{lp.name}.repeats", repeats)], tops, lp.name)


_OP = caffe_pb2.ReductionParameter
_REDUCE = {_OP.SUM: "ReduceSum", _OP.ASUM: "ReduceL1", _OP.SUMSQ: "ReduceSumSquare", _OP.MEAN: "ReduceMean"}


def reduction(g, lp, blobs, bottoms, tops):
    """The axes from `axis` on flattened into one, reduced away, times coeff."""
    p = lp.reduction_param
    axis = _axis(p.axis, len(g.shape(lp.bottom[0])))
    flat = g.node("Reshape", [bottoms[0], g.ints(f"{lp.name}.shape", [0] * axis + [-1])], [g.temp(f"{lp.name}.flat")],
                  f"{lp.name}.flatten")
    out = tops if p.coeff == 1 else [g.temp(f"{lp.name}.reduced")]
    y = g.reduce(_REDUCE[p.operation], flat, [axis], out, lp.name, keepdims=0)
    if p.coeff != 1:
        g.node("Mul", [y, g.const(f"{lp.name}.coeff", p.coeff)], tops, f"{lp.name}.coeff")


def crop(g, lp, blobs, bottoms, tops):
    """Slice bottom 0 to bottom 1's size on every axis from `axis` on; bottom 1 only gives the shape."""
    p = lp.crop_param
    source, reference = g.shape(lp.bottom[0]), g.shape(lp.bottom[1])
    axis = _axis(p.axis, len(source))
    if axis == 0 and g.dynamic:
        raise SiameseError(f'layer "{lp.name}" (Crop): crops the batch axis; export with a fixed batch (--batch N)')
    offsets = list(p.offset)
    axes = list(range(axis, len(source)))
    starts = [offsets[0] if len(offsets) == 1 else (offsets[k] if offsets else 0) for k in range(len(axes))]
    ends = [start + reference[a] for start, a in zip(starts, axes)]
    g.node("Slice", [bottoms[0], g.ints(f"{lp.name}.starts", starts), g.ints(f"{lp.name}.ends", ends),
                     g.ints(f"{lp.name}.axes", axes)], tops, lp.name)


def argmax(g, lp, blobs, bottoms, tops):
    """TopK over the reversed values, so that equal values rank the higher index first as in Caffe;
    the indices are mapped back and given as floats. Without `axis` each item is ranked whole."""
    from onnx import TensorProto

    p = lp.argmax_param
    shape, out_shape = g.shape(lp.bottom[0]), g.shape(lp.top[0])
    x = bottoms[0]
    if p.HasField("axis"):
        axis = _axis(p.axis, len(shape))
    else:
        axis = 1
        x = g.node("Reshape", [x, g.ints(f"{lp.name}.rows", [0, -1])], [g.temp(f"{lp.name}.rows")], f"{lp.name}.rows")
    size = shape[axis] if p.HasField("axis") else int(np.prod(shape[1:]))
    x = g.node("Slice", [x, g.ints(f"{lp.name}.start", [-1]), g.ints(f"{lp.name}.end", [-(1 << 62)]),
                         g.ints(f"{lp.name}.axis", [axis]), g.ints(f"{lp.name}.step", [-1])],
               [g.temp(f"{lp.name}.reversed")], f"{lp.name}.reverse")
    values, reversed_index = g.node("TopK", [x, g.ints(f"{lp.name}.k", [int(p.top_k)])],
                                    [g.temp(f"{lp.name}.values"), g.temp(f"{lp.name}.rindex")], f"{lp.name}.topk",
                                    axis=axis)
    as_float = g.node("Cast", [reversed_index], [g.temp(f"{lp.name}.rindexf")], f"{lp.name}.cast", to=TensorProto.FLOAT)
    if p.HasField("axis"):
        if p.out_max_val:
            return g.node("Identity", [values], tops, lp.name)
        return g.node("Sub", [g.const(f"{lp.name}.last", size - 1), as_float], tops, lp.name)
    index = g.node("Sub", [g.const(f"{lp.name}.last", size - 1), as_float], [g.temp(f"{lp.name}.index")],
                   f"{lp.name}.index")
    if p.out_max_val:
        index = g.node("Concat", [index, values], [g.temp(f"{lp.name}.both")], f"{lp.name}.concat", axis=1)
    g.node("Reshape", [index, g.ints(f"{lp.name}.shape", [0] + list(out_shape[1:]))], tops, lp.name)


def silence(g, lp, blobs, bottoms, tops):
    """Silence has no top: nothing to compute."""


ROUTING = {
    "Eltwise": eltwise, "Concat": concat, "Slice": slice_layer, "Split": identity, "Dropout": identity,
    "Flatten": flatten, "Reshape": reshape, "Softmax": softmax, "Tile": tile, "Reduction": reduction, "Crop": crop,
    "ArgMax": argmax, "Silence": silence,
}
