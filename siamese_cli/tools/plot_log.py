"""`siamese plot-log`: train and test loss against iteration, from any of the logs training leaves.

Three inputs, recognised by their content: the glog-style text log (ours or real
Caffe's), and the `--log` file as CSV (`phase,iter,name,value`) or JSON lines.
"""
import csv
import io
import json
import math
import re
import sys
from pathlib import Path

import numpy as np

from ..errors import SiameseError
from ..io.files import check_writable
from .figures import new_figure, picture_format, save_figure

_NUMBER = r"([-+]?(?:nan|inf|[0-9.]+(?:[eE][-+]?[0-9]+)?))"
# `Iteration 100 (13.7 iter/s, 7.3s/100 iters), loss = 0.05` (Caffe 1.0) or `Iteration 100, loss = 0.05` (older).
_ITER_LOSS = re.compile(r"Iteration (\d+)(?: \([^)]*\))?, loss = " + _NUMBER, re.IGNORECASE)
_ITER_LR = re.compile(r"Iteration (\d+), lr = " + _NUMBER, re.IGNORECASE)
_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_TEST_OUTPUT = re.compile(r"Test net output #\d+: (\S+) = " + _NUMBER + r"(\s+\(\* \S+ = \S+ loss\))?", re.IGNORECASE)
_CSV_HEADER = ["phase", "iter", "name", "value"]


def _number(text):
    try:
        return float(text)
    except ValueError:
        return math.nan


def _parse_text(lines, path):
    """Rows from glog lines: the displayed train loss and lr, and each test output of each test pass."""
    train, test = [], []
    testing = None  # (iteration, test net index) of the pass whose output lines follow
    for line in lines:
        match = _TESTING.search(line)
        if match:
            testing = (int(match.group(1)), int(match.group(2)))
            continue
        match = _TEST_OUTPUT.search(line)
        if match:
            if testing is not None:
                test.append({"iter": testing[0], "name": match.group(1), "value": _number(match.group(2)),
                             "net": testing[1], "loss": bool(match.group(3))})
            continue
        match = _ITER_LOSS.search(line)
        if match:
            train.append({"iter": int(match.group(1)), "name": "loss", "value": _number(match.group(2))})
            continue
        match = _ITER_LR.search(line)
        if match:
            train.append({"iter": int(match.group(1)), "name": "lr", "value": _number(match.group(2))})
    return train, test


def _add_row(train, test, phase, iteration, name, value, where):
    try:
        iteration, value = int(iteration), float(value)
    except (TypeError, ValueError):
        raise SiameseError(f"{where}: iter must be an integer and value a number, got {iteration!r}, {value!r}") from None
    phase = str(phase).lower()
    if phase == "train":
        train.append({"iter": iteration, "name": str(name), "value": value})
    elif phase == "test":
        test.append({"iter": iteration, "name": str(name), "value": value, "net": 0, "loss": "loss" in str(name).lower()})
    else:
        raise SiameseError(f'{where}: phase "{phase}" is neither train nor test')


def _parse_csv(text, path):
    train, test = [], []
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    if [h.strip() for h in header] != _CSV_HEADER:
        raise SiameseError(f"{path}:1: CSV header is {','.join(header)}, expected {','.join(_CSV_HEADER)}")
    for number, row in enumerate(reader, 2):
        if not row:
            continue
        if len(row) != 4:
            raise SiameseError(f"{path}:{number}: {len(row)} fields, expected 4 ({','.join(_CSV_HEADER)})")
        _add_row(train, test, *row, where=f"{path}:{number}")
    return train, test


def _parse_jsonl(lines, path):
    train, test = [], []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            fields = [record[key] for key in _CSV_HEADER]
        except json.JSONDecodeError as exc:
            raise SiameseError(f"{path}:{number}: not a JSON object ({exc.msg})") from None
        except (KeyError, TypeError):
            raise SiameseError(f"{path}:{number}: each line needs the keys {', '.join(_CSV_HEADER)}") from None
        _add_row(train, test, *fields, where=f"{path}:{number}")
    return train, test


def parse_log(path):
    """(train_rows, test_rows) of a training log; each row a dict with "iter", "name", "value".

    Test rows also carry "net" (the test net's index) and "loss" (whether the output
    counts toward the loss: its `(* w = ... loss)` suffix in a text log, "loss" in its
    name in a CSV/JSON log). From a text log the train rows are the displayed loss
    (averaged over the solver's `average_loss`, as Caffe prints it) and the lr; from
    a `--log` file, the loss of every iteration and the lr at each display.
    """
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise SiameseError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SiameseError(f"{path}: is a folder, not a log file") from None
    lines = text.splitlines()
    first = next((line.strip() for line in lines if line.strip()), "")
    if first.replace(" ", "").startswith("phase,iter"):
        return _parse_csv(text.lstrip(), path)
    if first.startswith("{"):
        return _parse_jsonl(lines, path)
    return _parse_text(lines, path)


def _moving_average(values, window):
    kernel = np.ones(window) / window
    return np.convolve(values, kernel, mode="valid")


def _plain_log_labels(axis):
    """Label a log axis 0.03 rather than 3x10^-2, at the ticks matplotlib would label."""
    from matplotlib.ticker import LogFormatterSciNotation

    class Plain(LogFormatterSciNotation):
        def __call__(self, value, pos=None):
            return f"{value:g}" if super().__call__(value, pos) else ""

    axis.set_major_formatter(Plain())
    axis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def loss_figure(train_rows, test_rows, title="Training loss"):
    """A Figure of the train loss (thin line, plus its moving mean when dense) and test losses (markers).

    The y axis is logarithmic when the finite, positive losses span more than a decade.
    Returns None when the rows hold no loss at all.
    """
    train_loss = [(r["iter"], r["value"]) for r in train_rows if r["name"] == "loss"]
    test_series = {}
    for r in test_rows:
        if r["loss"]:
            test_series.setdefault((r["net"], r["name"]), []).append((r["iter"], r["value"]))
    if not train_loss and not test_series:
        return None

    fig = new_figure((8, 5))
    ax = fig.add_subplot()
    values = []
    if train_loss:
        iters, losses = np.array(train_loss, dtype=np.float64).T
        values.append(losses)
        dense = len(iters) > 200
        ax.plot(iters, losses, lw=0.7, alpha=0.35 if dense else 0.8, color="tab:blue",
                marker=None if dense else ".", ms=3, label="train loss")
        if dense:
            window = int(np.clip(len(iters) // 100, 5, 500))
            ax.plot(iters[window - 1:], _moving_average(losses, window), lw=1.6, color="tab:blue",
                    label=f"train loss, mean of {window} iterations")
    several = len({net for net, _ in test_series}) > 1 or len({name for _, name in test_series}) > 1
    markers = "os^Dv<>"
    colours = ["tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown"]
    for k, ((net, name), points) in enumerate(sorted(test_series.items())):
        iters, losses = np.array(points, dtype=np.float64).T
        values.append(losses)
        label = f"test {name}" + (f" (net #{net})" if several else "")
        ax.plot(iters, losses, lw=1.0, color=colours[k % len(colours)], marker=markers[k % len(markers)],
                ms=5, label=label)

    finite = np.concatenate(values)
    finite = finite[np.isfinite(finite)]
    if finite.size and finite.min() > 0 and finite.max() / finite.min() > 10:
        ax.set_yscale("log")
        _plain_log_labels(ax.yaxis)
        ax.grid(True, which="major", alpha=0.5)
        ax.grid(True, which="minor", alpha=0.15)
    else:
        ax.grid(True, alpha=0.4)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    return fig


def default_picture(log_path):
    """Where the picture goes without --out: beside the log, `NAME_loss.png` (train.log -> train_loss.png)."""
    log_path = Path(log_path)
    return log_path.with_name(f"{log_path.stem}_loss.png")


def plot_log(log_path, out=None, report=None):
    """Draw the train and test loss of the log at `log_path` into `out` (png, svg or pdf; default beside the log).

    `report` (default stdout) is told what was written where.
    """
    out = out or default_picture(log_path)
    picture_format(out)
    check_writable(out)
    train, test = parse_log(log_path)
    fig = loss_figure(train, test, title=f"Training loss: {Path(log_path).name}")
    if fig is None:
        raise SiameseError(f"{log_path}: no train or test loss found; give the text log of `siamese train` "
                           "(or `caffe train`), or the .csv/.jsonl file written with `siamese train --log`")
    save_figure(fig, out)
    train_iters = [row["iter"] for row in train if row["name"] == "loss"]
    passes = len({(row["net"], row["iter"]) for row in test if row["loss"]})
    shown = f"{len(train_iters)} train losses" + (f" to iteration {max(train_iters)}" if train_iters else "")
    (report or sys.stdout).write(f"wrote {out} ({shown}, {passes} test passes)\n")
    return out
