"""Net and solver definitions in protobuf text format, with errors that point at file:line:col."""
import difflib
import re

from google.protobuf import text_encoding, text_format

from ..errors import SiameseError
from ..proto import caffe_pb2

_NO_FIELD = re.compile(r'Message type "caffe\.(\w+)" has no field named "(\w+)"')


def _describe(message):
    """Reword protobuf's parse error in Caffe's vocabulary, with the nearest field name when one is close."""
    match = _NO_FIELD.search(message)
    if match:
        kind, field = match.groups()
        text = f'unknown field "{field}" in {kind}'
        descriptor = getattr(getattr(caffe_pb2, kind, None), "DESCRIPTOR", None)
        close = difflib.get_close_matches(field, list(descriptor.fields_by_name), n=1) if descriptor else []
        return text + (f'; did you mean "{close[0]}"?' if close else "")
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


# ---- where a field of a layer is in the text --------------------------------------
# Protobuf's parser keeps no positions, so errors found after parsing (an unsupported
# layer type, an unknown filler) locate their field by scanning the text again.
_TOKEN = re.compile(r"""(?P<space>\s+)|(?P<comment>\#[^\n]*)
    |(?P<string>"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?)
    |(?P<word>[^\s{}<>:;,\[\]"'\#]+)|(?P<punct>.)""", re.X)
_NET_FIELDS = ("net_param", "train_net_param", "test_net_param")


def _tokens(text):
    line = 1
    for match in _TOKEN.finditer(text):
        if match.lastgroup not in ("space", "comment"):
            yield match.lastgroup, match.group(), line
        line += match.group().count("\n")


def _value(kind, token):
    if kind != "string":
        return token
    try:
        return text_encoding.CUnescape(token[1:-1]).decode("utf-8", "replace")
    except Exception:  # a malformed escape: the raw text is good enough to match on
        return token[1:-1]


def layer_blocks(text):
    """Every `layer { }` (or V1 `layers { }`) block of a net's text or a solver's inline nets, in order.

    Each is a dict: "name" (str or None) and "lines" {field path inside the layer,
    e.g. ("convolution_param", "weight_filler", "type"): [line of each occurrence]}.
    Meant for text that protobuf parsed; on anything else it returns what it found.
    """
    tokens = list(_tokens(text))
    blocks = []
    stack = []  # open blocks: [field name, layer block dict or None, whether it is a `[ ]` list]

    def open_block(name):
        inside_net = all(entry[0] in _NET_FIELDS for entry in stack if not entry[2])
        is_layer = name in ("layer", "layers") and inside_net  # `layers` in V1 nets
        block = {"name": None, "lines": {}, "depth": len(stack) + 1} if is_layer else None
        if block is not None:
            blocks.append(block)
        stack.append([name, block, False])

    i = 0
    while i < len(tokens):
        kind, token, line = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        i += 1
        if token in ("}", ">", "]"):
            if stack and stack[-1][2] == (token == "]"):
                stack.pop()
            continue
        if token in ("{", "<"):  # a message inside a `field: [ ... ]` list
            open_block(stack[-1][0] if stack and stack[-1][2] else "")
            continue
        if kind != "word":
            continue
        if following == ":":
            i += 1
            following = tokens[i][1] if i < len(tokens) else ""
        if following in ("{", "<"):
            open_block(token)
            i += 1
        elif following == "[":
            stack.append([token, None, True])
            i += 1
        elif i < len(tokens):
            current = next((entry[1] for entry in reversed(stack) if entry[1] is not None), None)
            if current is not None:
                path = tuple(entry[0] for entry in stack[current["depth"]:] if not entry[2]) + (token,)
                current["lines"].setdefault(path, []).append(line)
                if path == ("name",) and current["name"] is None:
                    current["name"] = _value(*tokens[i][:2])
            i += 1
    return blocks


def field_line(path, layer_name, field, occurrence=0, nth=0):
    """The line of `field` (a path tuple) in the `nth` layer named `layer_name` of the file at `path`, or None.

    `occurrence` picks among repeats of the field (the second `data_filler`, say).
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError):
        return None
    named = [block for block in layer_blocks(text) if block["name"] == layer_name]
    if not named:
        return None
    lines = named[min(nth, len(named) - 1)]["lines"].get(tuple(field), [])
    return lines[occurrence] if len(lines) > occurrence else None
