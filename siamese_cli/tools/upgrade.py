"""`siamese upgrade-net` and `upgrade-solver`: Caffe's upgrade_net_proto_text/binary and upgrade_solver_proto_text.

A text prototxt is written back as text, a binary .caffemodel as binary, both in the
current format (`layer { type: "Name" }`, `param { lr_mult }`, an Input layer for inputs).
"""
from pathlib import Path

from google.protobuf import text_format

from ..errors import SiameseError
from ..io.files import check_writable, read_binary_proto, write_bytes_atomic
from ..io.prototxt import parse_text
from ..io.upgrade import HDF5_MAGIC, upgrade_net, upgrade_solver_nets, upgrade_solver_type
from ..log import CaffeLog
from ..proto import caffe_pb2


def _read(path):
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise SiameseError(f"{path}: no such file") from None
    except OSError as exc:
        raise SiameseError(f"{path}: cannot read: {exc.strerror}") from None


def _as_text(payload):
    """The text of a prototxt, or None for a binary file."""
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _looks_like_solver(text):
    """True when `text` parses as a SolverParameter naming a net or a learning rate, and not as a net."""
    try:
        parse_text(text, caffe_pb2.NetParameter())
        return False
    except SiameseError:
        pass
    try:
        solver = parse_text(text, caffe_pb2.SolverParameter())
    except SiameseError:
        return False
    return any(solver.HasField(f) for f in ("net", "net_param", "train_net", "train_net_param", "base_lr"))


def upgrade_net_file(source, target, log=None):
    """Write the upgraded form of net `source` (text or binary) to `target` in the same form. Returns "text"/"binary"."""
    log = log or CaffeLog()
    payload = _read(source)
    if payload.startswith(HDF5_MAGIC):
        raise SiameseError(f"{source}: HDF5 weights are already in the current layout; nothing to upgrade")
    check_writable(target)
    text = _as_text(payload)
    binary = text is None or Path(source).suffix in (".caffemodel", ".binaryproto")
    if not binary and _looks_like_solver(text):
        raise SiameseError(f"{source}: this is a solver prototxt, not a net; use siamese upgrade-solver {source} OUT")
    net = read_binary_proto(source, caffe_pb2.NetParameter()) if binary else \
        parse_text(text, caffe_pb2.NetParameter(), str(source))
    if not upgrade_net(net, str(source), log, inputs=True):
        log(f"File already in latest proto format: {source}")
    if binary:
        write_bytes_atomic(target, net.SerializeToString())
        log(f"Wrote upgraded NetParameter binary proto to {target}")
    else:
        write_bytes_atomic(target, text_format.MessageToString(net).encode())
        log(f"Wrote upgraded NetParameter text proto to {target}")
    return "binary" if binary else "text"


def upgrade_solver_file(source, target, log=None):
    """Write solver `source` with `type` for the old `solver_type` enum (and inline nets upgraded) to `target`."""
    log = log or CaffeLog()
    text = _as_text(_read(source))
    if text is None:
        raise SiameseError(f"{source}: not a text solver prototxt")
    check_writable(target)
    solver = parse_text(text, caffe_pb2.SolverParameter(), str(source))
    changed = upgrade_solver_type(solver, str(source), log)
    before = solver.SerializeToString()
    upgrade_solver_nets(solver, str(source), log)
    if not changed and solver.SerializeToString() == before:
        log(f"File already in latest proto format: {source}")
    write_bytes_atomic(target, text_format.MessageToString(solver).encode())
    log(f"Wrote upgraded SolverParameter text proto to {target}")
