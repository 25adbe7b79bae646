"""ONNX forms of Caffe's layers that combine, split, reshape or reduce blobs without weights."""
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


def silence(g, lp, blobs, bottoms, tops):
    """Silence has no top: nothing to compute."""


ROUTING = {
    "Eltwise": eltwise, "Concat": concat, "Slice": slice_layer, "Split": identity, "Dropout": identity,
    "Flatten": flatten, "Reshape": reshape, "Softmax": softmax, "Tile": tile, "Reduction": reduction, "Crop": crop,
    "Silence": silence,
}
