"""Net and solver definitions in protobuf text format, with errors that point at file:line:col."""
import re

from google.protobuf import text_format

from ..errors import SiameseError
from ..proto import caffe_pb2

_NO_FIELD = re.compile(r'Message type "caffe\.(\w+)" has no field named "(\w+)"')


def _describe(message):
    """Reword protobuf's parse error in Caffe's vocabulary."""
    match = _NO_FIELD.search(message)
    if match:
        return f'unknown field "{match.group(2)}" in {match.group(1)}'
    return message.rstrip(".")


def parse_text(text, message, source="<string>"):
    """Merge prototxt `text` into `message`; a ParseError becomes one SiameseError line."""
    try:
        text_format.Merge(text, message)
    except text_format.ParseError as exc:
        line, column = exc.GetLine(), exc.GetColumn()
        detail = str(exc)
        detail = re.sub(r"^\d+:\d+ ?: ?", "", detail)
        where = f"{source}:{line}:{column}" if line is not None else source
        raise SiameseError(f"{where}: {_describe(detail)}") from exc
    return message


def read_text(path, message):
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        raise SiameseError(f"{path}: no such file; check the path (relative paths start at the working directory)") from None
    except OSError as exc:
        raise SiameseError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_text(text, message, source=str(path))


def read_net(path):
    """A NetParameter from a .prototxt file, upgraded from Caffe's V0/V1 formats when it uses them."""
    from .upgrade import upgrade_net

    net = read_text(path, caffe_pb2.NetParameter())
    upgrade_net(net, str(path))
    return net


def read_solver(path):
    """A SolverParameter from a solver .prototxt file; nets written inside it are upgraded as read_net's."""
    from .upgrade import upgrade_solver_nets

    solver = read_text(path, caffe_pb2.SolverParameter())
    upgrade_solver_nets(solver, str(path))
    if solver.snapshot_format == caffe_pb2.SolverParameter.HDF5:
        from .hdf5 import h5py_module

        h5py_module(f"{path}: snapshot_format: HDF5 snapshots")  # refuse now, not at the first snapshot
    return solver


def to_text(message):
    return text_format.MessageToString(message)
