"""`siamese draw-net`: the layer graph of a net definition, with shared parameters marked.

We write the DOT text ourselves and let Graphviz's `dot` binary lay it out, so the
only extra need is the `dot` program, and `.dot` output works even without it.
As in Caffe's drawing, a blob is one node however many layers write it: an
in-place layer (top == bottom) points back at the blob it read. Unlike Caffe's
drawing, layers that share a named parameter are joined by a dashed, coloured
line labelled with the parameter names, so the two towers of a siamese net
visibly use one set of weights.
"""
import html
import shutil
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

from ..errors import SiameseError
from ..io.files import check_writable, write_bytes_atomic
from ..io.prototxt import read_net
from ..proto import caffe_pb2

RANKDIRS = ("AUTO", "LR", "TB", "BT", "RL")
_DIRECTION = {"LR": "left to right", "TB": "top to bottom", "BT": "bottom to top", "RL": "right to left"}
PHASES = ("TRAIN", "TEST", "ALL")
IMAGE_FORMATS = ("png", "svg", "pdf", "jpg", "jpeg")

LAYER_COLOUR = "#a8c8f0"
NEURON_COLOUR = "#b5e3b0"
LOSS_COLOUR = "#f4b6a8"
DATA_COLOUR = "#d9c8ef"
BLOB_COLOUR = "#f3e9b5"
# One colour per group of layers that share parameters (Tableau 10, dark enough for thin lines).
SHARE_COLOURS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e",
                 "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22")

_DATA_TYPES = {"Data", "ImageData", "HDF5Data", "MemoryData", "WindowData", "DummyData", "Input"}
_PHASE_NAME = {caffe_pb2.TRAIN: "TRAIN", caffe_pb2.TEST: "TEST"}


def _quote(text):
    """A DOT double-quoted string; newlines become centred line breaks."""
    escaped = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\n", "\\n") + '"'


class Html(str):
    """A Graphviz HTML-like label, written between angle brackets instead of quotes."""


def _attrs(**attrs):
    return "[" + ", ".join(f"{key}=<{value}>" if isinstance(value, Html) else f"{key}={_quote(value)}"
                           for key, value in attrs.items()) + "]"


def _html_lines(lines):
    return "<BR/>".join(html.escape(line, quote=False) for line in lines)


def _hw(values, height, width, default=None):
    """Caffe's size spelling: one value for both sides, or (h, w) when they differ."""
    if height is not None and width is not None:
        return str(height) if height == width else f"{height}x{width}"
    if values:
        return "x".join(str(v) for v in values)
    return default


def _conv_settings(p):
    kernel = _hw(list(p.kernel_size), p.kernel_h if p.HasField("kernel_h") else None,
                 p.kernel_w if p.HasField("kernel_w") else None, "?")
    stride = _hw(list(p.stride), p.stride_h if p.HasField("stride_h") else None,
                 p.stride_w if p.HasField("stride_w") else None, "1")
    pad = _hw(list(p.pad), p.pad_h if p.HasField("pad_h") else None,
              p.pad_w if p.HasField("pad_w") else None, "0")
    lines = [f"{p.num_output} outputs", f"kernel {kernel}, stride {stride}, pad {pad}"]
    extra = []
    if p.dilation and any(d != 1 for d in p.dilation):
        extra.append("dilation " + "x".join(str(d) for d in p.dilation))
    if p.group != 1:
        extra.append(f"group {p.group}")
    if not p.bias_term:
        extra.append("no bias")
    if extra:
        lines.append(", ".join(extra))
    return lines


def _pool_settings(p):
    method = caffe_pb2.PoolingParameter.PoolMethod.Name(p.pool)
    if p.global_pooling:
        return [f"{method}, global"]
    kernel = _hw([p.kernel_size] if p.HasField("kernel_size") else [],
                 p.kernel_h if p.HasField("kernel_h") else None, p.kernel_w if p.HasField("kernel_w") else None, "?")
    stride = _hw([p.stride], p.stride_h if p.HasField("stride_h") else None,
                 p.stride_w if p.HasField("stride_w") else None)
    pad = _hw([p.pad], p.pad_h if p.HasField("pad_h") else None, p.pad_w if p.HasField("pad_w") else None)
    return [f"{method} {kernel}, stride {stride}, pad {pad}"]


def layer_settings(layer):
    """The few settings that identify what a layer does, one short line each."""
    kind = layer.type
    if kind in ("Convolution", "Deconvolution"):
        return _conv_settings(layer.convolution_param)
    if kind == "Pooling":
        return _pool_settings(layer.pooling_param)
    if kind == "InnerProduct":
        p = layer.inner_product_param
        lines = [f"{p.num_output} outputs"]
        if p.transpose or not p.bias_term:
            lines.append(", ".join(s for s, on in (("transpose", p.transpose), ("no bias", not p.bias_term)) if on))
        return lines
    if kind == "ContrastiveLoss":
        p = layer.contrastive_loss_param
        return [f"margin {p.margin:g}" + (", legacy" if p.legacy_version else "")]
    if kind == "Data":
        p = layer.data_param
        backend = caffe_pb2.DataParameter.DB.Name(p.backend).lower()
        lines = [f"batch {p.batch_size}, {backend}"]
        if layer.transform_param.HasField("scale"):
            lines.append(f"scale {layer.transform_param.scale:g}")
        return lines
    if kind == "Input":
        return ["shape " + "x".join(str(d) for d in shape.dim) for shape in layer.input_param.shape]
    if kind == "Slice":
        p = layer.slice_param
        axis = p.slice_dim if p.HasField("slice_dim") else p.axis
        return [f"axis {axis}, at " + ", ".join(str(v) for v in p.slice_point)] if p.slice_point else [f"axis {axis}"]
    if kind == "Concat":
        p = layer.concat_param
        return [f"axis {p.concat_dim if p.HasField('concat_dim') else p.axis}"]
    if kind == "Eltwise":
        return [caffe_pb2.EltwiseParameter.EltwiseOp.Name(layer.eltwise_param.operation)]
    if kind == "ReLU" and layer.relu_param.negative_slope:
        return [f"negative slope {layer.relu_param.negative_slope:g}"]
    if kind == "Dropout":
        return [f"ratio {layer.dropout_param.dropout_ratio:g}"]
    if kind == "LRN":
        p = layer.lrn_param
        return [f"size {p.local_size}, alpha {p.alpha:g}, beta {p.beta:g}"]
    if kind == "Accuracy" and layer.accuracy_param.top_k != 1:
        return [f"top {layer.accuracy_param.top_k}"]
    return []


def _rule_text(rule):
    parts = []
    if rule.HasField("phase"):
        parts.append(_PHASE_NAME[rule.phase])
    if rule.HasField("min_level"):
        parts.append(f"level>={rule.min_level}")
    if rule.HasField("max_level"):
        parts.append(f"level<={rule.max_level}")
    parts.extend(f"stage {s}" for s in rule.stage)
    parts.extend(f"not stage {s}" for s in rule.not_stage)
    return " ".join(parts)


def _phase_note(layer):
    if layer.include:
        return "only " + " or ".join(_rule_text(rule) for rule in layer.include)
    if layer.exclude:
        return "not " + " or ".join(_rule_text(rule) for rule in layer.exclude)
    return None


def _is_in_place(layer):
    return len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]


def _layer_colour(layer):
    if layer.type in _DATA_TYPES:
        return DATA_COLOUR
    if layer.type.endswith("Loss") or layer.loss_weight:
        return LOSS_COLOUR
    if _is_in_place(layer):
        return NEURON_COLOUR
    return LAYER_COLOUR


def select_layers(net_param, phase="ALL"):
    """The layers drawn for `phase`: every layer for ALL, else those Caffe's phase filter keeps."""
    phase = str(phase).upper()
    if phase not in PHASES:
        raise SiameseError(f'unknown phase "{phase}"; use TRAIN, TEST or ALL')
    if phase == "ALL":
        return list(net_param.layer)
    from ..net_state import layer_included

    state = caffe_pb2.NetState()
    state.MergeFrom(net_param.state)
    state.phase = caffe_pb2.TRAIN if phase == "TRAIN" else caffe_pb2.TEST
    return [layer for layer in net_param.layer if layer_included(layer, state)]


def shared_params(layers):
    """{param name: [index of each layer naming it, in order]} for names used by two or more layers."""
    users = OrderedDict()
    for index, layer in enumerate(layers):
        for spec in layer.param:
            if spec.name:
                users.setdefault(spec.name, [])
                if index not in users[spec.name]:
                    users[spec.name].append(index)
    return OrderedDict((name, where) for name, where in users.items() if len(where) > 1)


def graph_shape(layers):
    """(depth, width): the longest chain of layers, and the most layers at one depth of it.

    In-place layers hang beside their blob, as dot draws them, so they add no depth.
    """
    depth_of_blob, count = {}, {}
    for layer in layers:
        level = 1 + max((depth_of_blob.get(name, 0) for name in layer.bottom), default=0)
        count[level] = count.get(level, 0) + 1
        if not _is_in_place(layer):
            depth_of_blob.update(dict.fromkeys(layer.top, level))
    return max(count, default=0), max(count.values(), default=0)


def auto_rankdir(layers):
    """Top to bottom for chains (the usual net, a siamese pair of towers); left to right when wider than deep."""
    depth, width = graph_shape(layers)
    return "LR" if width > depth else "TB"


def _input_shapes(net_param):
    """{input name: "N x C x H x W"} for the deploy-style `input:` blobs whose shape the net gives."""
    names = list(net_param.input)
    if len(net_param.input_shape) == len(names):
        dims = [list(shape.dim) for shape in net_param.input_shape]
    elif len(net_param.input_dim) == 4 * len(names):
        dims = [list(net_param.input_dim[4 * k:4 * k + 4]) for k in range(len(names))]
    else:
        return {}
    return {name: " x ".join(map(str, d)) for name, d in zip(names, dims) if d}


def net_to_dot(net_param, rankdir="AUTO", phase="ALL"):
    """The DOT source of `net_param`'s layer graph (layers as boxes, blobs as octagons).

    `rankdir` AUTO picks the direction from the graph's shape (auto_rankdir).
    """
    rankdir = str(rankdir).upper()
    if rankdir not in RANKDIRS:
        raise SiameseError(f'unknown rankdir "{rankdir}"; use one of {", ".join(RANKDIRS)}')
    layers = select_layers(net_param, phase)
    if not layers:
        raise SiameseError(f'net "{net_param.name}" has no layers in phase {phase}; nothing to draw')
    if rankdir == "AUTO":
        rankdir = auto_rankdir(layers)
    title = net_param.name or "net"
    if str(phase).upper() != "ALL":
        title += f" ({str(phase).upper()})"

    lines = [f"digraph {_quote(net_param.name or 'net')} {{"]
    lines.append("  graph " + _attrs(rankdir=rankdir, label=title, labelloc="t", fontname="Helvetica",
                                     fontsize="16", nodesep="0.45", ranksep="0.35", pad="0.2") + ";")
    lines.append("  node " + _attrs(fontname="Helvetica", fontsize="11", penwidth="1") + ";")
    lines.append("  edge " + _attrs(fontname="Helvetica", fontsize="10", arrowsize="0.7") + ";")

    blob_ids = OrderedDict()

    def blob(name):
        if name not in blob_ids:
            blob_ids[name] = f"blob{len(blob_ids)}"
            lines.append(f"  {blob_ids[name]} " + _attrs(label=name, shape="octagon", style="filled",
                                                        fillcolor=BLOB_COLOUR, fontsize="10") + ";")
        return blob_ids[name]

    shared = shared_params(layers)
    pairs = OrderedDict()  # (owner index, user index) -> [param names]
    for name, where in shared.items():
        for user in where[1:]:
            pairs.setdefault((where[0], user), []).append(name)
    group_colour = {}  # layer index -> colour of its owner's sharing group
    for owner, user in pairs:
        colour = group_colour.setdefault(owner, SHARE_COLOURS[len(set(group_colour.values())) % len(SHARE_COLOURS)])
        group_colour.setdefault(user, colour)

    for name, shape in _input_shapes(net_param).items():
        blob_ids[name] = f"blob{len(blob_ids)}"
        lines.append(f"  {blob_ids[name]} " + _attrs(label=f"{name}\n(net input)\n{shape}", shape="box",
                                                    style="filled,rounded", fillcolor=DATA_COLOUR) + ";")
    for name in net_param.input:
        blob(name)
    edges = []
    for index, layer in enumerate(layers):
        text = [layer.name, f"({layer.type})", *layer_settings(layer)]
        note = _phase_note(layer)
        if note:
            text.append(f"[{note}]")
        label = _html_lines(text)
        named = [spec.name for spec in layer.param if spec.name]
        if named:
            shown = []
            for name in named:
                escaped = html.escape(name, quote=False)
                if name in shared:
                    colour = group_colour[shared[name][0]]
                    escaped = f'<FONT COLOR="{colour}"><B>{escaped}</B></FONT>'
                shown.append(escaped)
            label += "<BR/>params: " + ", ".join(shown)
        border = {"color": group_colour[index], "penwidth": "2.5"} if index in group_colour else {}
        lines.append(f"  layer{index} " + _attrs(label=Html(label), shape="box", style="filled,rounded",
                                                 fillcolor=_layer_colour(layer), **border) + ";")
        for bottom in layer.bottom:
            edges.append(f"  {blob(bottom)} -> layer{index};")
        for top in layer.top:
            edges.append(f"  layer{index} -> {blob(top)};")
    lines.extend(edges)

    if shared:
        for (owner, user), names in pairs.items():
            lines.append(f"  layer{owner} -> layer{user} " + _attrs(
                dir="none", style="dashed", color=group_colour[owner], penwidth="2", constraint="false",
                tooltip="shared: " + ", ".join(names)) + ";")
        lines.append("  legend " + _attrs(label=Html(_legend(layers, pairs, group_colour)), shape="plaintext") + ";")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _legend(layers, pairs, group_colour):
    """An HTML table: one row per pair of layers sharing parameters, in the pair's colour."""
    rows = ['<TR><TD COLSPAN="2"><B>Shared parameters</B><BR/><FONT POINT-SIZE="9">dashed line, coloured border:'
            '<BR/>one weight storage, gradients summed</FONT></TD></TR>']
    for (owner, user), names in pairs.items():
        colour = group_colour[owner]
        who = html.escape(f"{layers[owner].name} = {layers[user].name}", quote=False)
        what = html.escape(", ".join(names), quote=False)
        rows.append(f'<TR><TD ALIGN="LEFT"><FONT COLOR="{colour}"><B>{what}</B></FONT></TD>'
                    f'<TD ALIGN="LEFT">{who}</TD></TR>')
    return ('<TABLE BORDER="1" CELLBORDER="0" CELLSPACING="0" CELLPADDING="3" BGCOLOR="#f7f7f7" COLOR="#999999">'
            + "".join(rows) + "</TABLE>")


def dot_binary():
    """Path of Graphviz's `dot`, or a SiameseError saying how to install it."""
    path = shutil.which("dot")
    if path is None:
        raise SiameseError("Graphviz's `dot` program is not installed (needed for png/svg/pdf); install it with "
                           "`apt-get install graphviz` (Debian/Ubuntu) or `brew install graphviz` (macOS), "
                           "or write .dot output and render it elsewhere")
    return path


def render_dot(dot_text, out, fmt):
    """Lay out `dot_text` with `dot -T<fmt>` and write the picture to `out` (atomically).

    dot writes to a pipe, not to the file, so every write failure is ours to report.
    """
    binary = dot_binary()
    try:
        result = subprocess.run([binary, f"-T{fmt}"], input=dot_text.encode("utf-8"), capture_output=True,
                                timeout=120)
    except subprocess.TimeoutExpired:
        raise SiameseError(f"{out}: Graphviz's dot took over 120 s to lay out the graph; try --phase TRAIN or TEST") from None
    if result.returncode != 0 or not result.stdout:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SiameseError(f"{out}: Graphviz's dot failed (exit {result.returncode}): "
                           f"{detail[-1] if detail else 'no message'}")
    write_bytes_atomic(out, result.stdout)


def draw_net(net_path, out, rankdir="AUTO", phase="ALL", report=None):
    """Draw the net of `net_path` (a prototxt, or a NetParameter) to `out`: .png, .svg, .pdf, .jpg or .dot.

    `report` (default stdout) is told what was written where.
    """
    net_param = read_net(net_path) if isinstance(net_path, (str, Path)) else net_path
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in (*IMAGE_FORMATS, "dot", "gv"):
        raise SiameseError(f"{out}: unknown picture format '.{suffix}'; use .png, .svg, .pdf, .jpg or .dot")
    check_writable(out)
    dot_text = net_to_dot(net_param, rankdir=rankdir, phase=phase)
    if suffix in ("dot", "gv"):
        write_bytes_atomic(out, dot_text.encode("utf-8"))
    else:
        render_dot(dot_text, out, "jpg" if suffix == "jpeg" else suffix)
    layers = select_layers(net_param, phase)
    direction = auto_rankdir(layers) if str(rankdir).upper() == "AUTO" else str(rankdir).upper()
    (report or sys.stdout).write(f"wrote {out} ({len(layers)} layers, {_DIRECTION[direction]})\n")
    return out
