"""Refusals around training: solver fields Caffe refuses, and losses or weights that went non-finite.

A solver error names the field and where it is (`solver.prototxt:7: ...`) when the text of the
solver file is at hand, else the file.
"""
import re
from pathlib import Path

import numpy as np

from ..errors import SiameseError


class NonFiniteError(SiameseError):
    """Training met a NaN or infinite loss (or weights): stopped without snapshotting them, exit status 3."""

    exit_code = 3


def field_location(source, field, value=None):
    """`FILE:LINE` of the first `field:` (with that quoted `value`, if given) in the solver file `source`.

    The file alone when the line is not found (the field came from elsewhere, or the text is odd).
    """
    if not source:
        return "the solver"
    try:
        lines = Path(source).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return str(source)
    quoted = rf"\s*[\"']{re.escape(value)}[\"']" if value is not None else ""
    pattern = re.compile(rf"(^|[\s{{]){re.escape(field)}\s*:{quoted}")
    for number, line in enumerate(lines, start=1):
        if pattern.search(line.split("#", 1)[0]):
            return f"{source}:{number}"
    return str(source)


def refuse(source, field, message):
    raise SiameseError(f"{field_location(source, field)}: {message}")


def check_solver_fields(param, source=None):
    """Caffe's checks on the solver message, before anything is built."""
    if param.HasField("solver_type") and param.HasField("type"):
        refuse(source, "solver_type", "old solver_type field (enum) and new type field (string) cannot be both "
                                      "specified; keep only `type`")
    if param.regularization_type not in ("L1", "L2"):
        refuse(source, "regularization_type", f'unknown regularization_type "{param.regularization_type}"; '
                                              f"use L2 or L1")
    if any(count < 1 for count in param.test_iter):
        refuse(source, "test_iter", f"test_iter must be at least 1 (it is {min(param.test_iter)}): a test pass "
                                    f"of no batches has no mean")
    if param.iter_size < 1:
        refuse(source, "iter_size", f"iter_size must be at least 1 (it is {param.iter_size})")


def check_momentum_unused(solver):
    """AdaGrad and RMSProp have no momentum term: Caffe refuses a non-zero momentum rather than ignore it."""
    if solver.param.momentum != 0:
        refuse(solver.source, "momentum", f"momentum cannot be used with {solver.type} (it is "
                                          f"{solver.param.momentum:g}); remove the momentum line")


def check_rms_decay(solver):
    decay = solver.param.rms_decay
    if not 0 <= decay < 1:
        refuse(solver.source, "rms_decay", f"rms_decay should lie in [0, 1) (it is {decay:g})")


def first_non_finite_top(net):
    """(layer index, top name) of the first layer whose output holds a NaN or an infinity, or None."""
    for i, tops in enumerate(net.tops):
        for j, top in enumerate(tops):
            if not np.isfinite(top.data).all():
                return i, net.param.layer[i].top[j]
    return None


def non_finite_loss(net, iteration, loss, last_snapshot):
    """The error for a non-finite loss, naming the first layer whose output went non-finite."""
    found = first_non_finite_top(net)
    if found is None:
        where = "every layer output is finite (the loss sum overflowed)"
    else:
        i, top = found
        layer = net.layers[i]
        where = f'the first non-finite output is top "{top}" of layer "{layer.name}" ({layer.type})'
        in_place = [net.param.layer[k].name for k in range(i + 1, len(net.layers)) if top in net.param.layer[k].top]
        if in_place:
            where += f", also written in place by {', '.join(in_place)}"
    return NonFiniteError(f"iteration {iteration}: the loss is {loss}; {where}. Training stopped; "
                          f"{_kept(last_snapshot)} Lower base_lr or check the data; --allow-nan trains on "
                          f"as Caffe does")


def non_finite_weights(net, iteration, last_snapshot):
    """The error for weights that went non-finite, or None when every learnable blob is finite."""
    for name, blobs in net.params.items():
        for k, blob in enumerate(blobs):
            if not np.isfinite(blob.data).all():
                return NonFiniteError(f"iteration {iteration}: blob {k} of layer \"{name}\" holds NaN or inf "
                                      f"(a non-finite gradient); not snapshotting it. {_kept(last_snapshot)} "
                                      f"Lower base_lr or set clip_gradients; --allow-nan trains on as Caffe does")
    return None


def _kept(last_snapshot):
    if last_snapshot:
        return f"the last good snapshot is {last_snapshot}."
    return "no snapshot was written."
