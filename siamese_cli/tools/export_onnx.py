"""`siamese export-onnx`: a deploy net and its trained weights as one ONNX file.

The net is built at batch 1 (or the fixed batch asked for) to learn every blob's shape;
with a dynamic batch the graph's first dimension is the symbol "batch".
"""
from pathlib import Path

from ..errors import SiameseError
from ..io.files import check_writable, write_bytes_atomic


def _onnx():
    try:
        import onnx
    except ImportError:
        raise SiameseError('export-onnx needs the onnx package: pip install -e ".[onnx]"') from None
    return onnx


def parse_batch(batch):
    """(dynamic, batch size) from 'dynamic' or a positive integer."""
    if batch is None or str(batch).lower() == "dynamic":
        return True, 1
    try:
        size = int(batch)
    except ValueError:
        size = 0
    if size <= 0:
        raise SiameseError(f"--batch {batch}: give 'dynamic' or a positive batch size")
    return False, size


def export_onnx(model, weights, out, opset=None, batch="dynamic"):
    """Write the ONNX form of deploy net `model` with `weights` to `out`; returns the onnx.ModelProto."""
    from ..export.onnx import DEFAULT_OPSET, check_supported, net_to_onnx
    from ..io.prototxt import read_net
    from ..net_state import filter_net
    from ..proto import caffe_pb2
    from .plot_features import deploy_net

    onnx = _onnx()
    dynamic, size = parse_batch(batch)
    check_supported(filter_net(read_net(model), caffe_pb2.NetState(phase=caffe_pb2.TEST)))
    check_writable(out)
    net = deploy_net(model, weights, batch_size=size)
    proto = net_to_onnx(net, opset=opset or DEFAULT_OPSET, dynamic=dynamic)
    write_bytes_atomic(out, proto.SerializeToString())

    def describe(values):
        return ", ".join(f"{v.name} [{'x'.join(d.dim_param or str(d.dim_value) for d in v.type.tensor_type.shape.dim)}]"
                         for v in values)

    opset_used = proto.opset_import[0].version
    print(f"wrote {out}: {describe(proto.graph.input)} -> {describe(proto.graph.output)}, "
          f"{len(proto.graph.node)} nodes, opset {opset_used}, onnx {onnx.__version__} ({Path(out).stat().st_size:,} bytes)")
    return proto
