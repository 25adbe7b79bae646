"""caffe.draw: pycaffe's drawing calls over siamese_cli/tools/draw_net.py (Graphviz's dot lays it out)."""
import os
import tempfile

from siamese_cli.proto import caffe_pb2
from siamese_cli.tools import draw_net as _tool


def _phase_name(phase):
    if phase is None:
        return "ALL"
    return "TRAIN" if phase == caffe_pb2.TRAIN else "TEST"


def draw_net_to_file(caffe_net, filename, rankdir="LR", phase=None, display_lrm=False):
    """Draw a NetParameter to `filename`; the format follows the extension (.png, .svg, .pdf, .dot).
    display_lrm is accepted; the drawing marks shared parameters instead of learning-rate multipliers."""
    _tool.draw_net(caffe_net, os.fsdecode(filename), rankdir=rankdir, phase=_phase_name(phase))


def draw_net(caffe_net, rankdir="LR", ext="png", phase=None, display_lrm=False):
    """The drawing as bytes in format `ext`."""
    if ext in ("dot", "raw"):
        return _tool.net_to_dot(caffe_net, rankdir=rankdir, phase=_phase_name(phase)).encode("utf-8")
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"net.{ext}")
        draw_net_to_file(caffe_net, path, rankdir=rankdir, phase=phase)
        with open(path, "rb") as handle:
            return handle.read()
