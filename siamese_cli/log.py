"""Log lines in glog's layout, so Caffe's log parsers (parse_log.py, plot_training_log.py) read them."""
import datetime
import json
import os
import sys
import threading
from pathlib import Path

from .io.files import check_writable, write_bytes_atomic, write_error


class CaffeLog:
    """Writes `I1129 02:43:50.123456 12345 solver.py:42] message` lines, naming the calling line as glog does.

    A progress bar sharing the stream is cleared before each line and redrawn after.
    """

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.progress = None

    def __call__(self, message, severity="I", depth=1):
        now = datetime.datetime.now()
        caller = sys._getframe(depth)
        where = f"{os.path.basename(caller.f_code.co_filename)}:{caller.f_lineno}"
        prefix = (f"{severity}{now:%m%d %H:%M:%S}.{now.microsecond:06d} {threading.get_native_id():>5} {where}]")
        if self.progress is not None:
            self.progress.clear()
        self.stream.write(f"{prefix} {message}\n")
        self.stream.flush()

    def warning(self, message):
        self(message, severity="W", depth=2)


def fmt(value):
    """A number as C++'s ostream prints it by default (6 significant digits, %g style)."""
    return f"{float(value):.6g}"


def output_line(name, value, weight):
    """`name = v`, with Caffe's ` (* w = w*v loss)` for weighted outputs."""
    suffix = f" (* {fmt(weight)} = {fmt(weight * value)} loss)" if weight else ""
    return f"{name} = {fmt(value)}{suffix}"


class TrainLog:
    """The --log file: one row per output value, as CSV (`phase,iter,name,value`) or JSON lines.

    Opened at the first row, not at construction, so a resume can decide how: a fresh run
    starts the file anew; a resumed run (`resume_at` set) keeps the rows from before the
    snapshot it resumed from, drops any written after it (they will be written again), and
    appends. Each row is flushed, so a crash loses at most the row being written.
    """

    HEADER = "phase,iter,name,value\n"

    def __init__(self, path):
        self.path = Path(path)
        self.json = self.path.suffix in (".jsonl", ".json")
        self.resume_at = None
        self.handle = None
        self.broken = False
        self.opened = False
        if self.path.exists() and not self.path.is_file() and not self.path.is_dir():
            self._check_device()
        else:
            check_writable(self.path)

    def _check_device(self):
        """A device or pipe (/dev/null, /dev/stdout) is written in place: opening it is the check."""
        try:
            open(self.path, "a", encoding="utf-8").close()
        except OSError as exc:
            raise write_error(self.path, exc) from exc

    def open(self):
        """Start the file now (a fresh run empties it at once); a no-op once open."""
        if self.handle is None and not self.broken:
            self._open()

    def _open(self):
        try:
            if self.opened:  # a later solve() of the same run goes on with the file
                self.handle = open(self.path, "a", encoding="utf-8")
                return
            kept = self._rows_before(self.resume_at) if self.resume_at is not None else None
            if kept is None or not self.path.is_file():
                self.handle = open(self.path, "w", encoding="utf-8")
                if not self.json:
                    self.handle.write(self.HEADER)
            else:
                if self.path.is_file():
                    write_bytes_atomic(self.path, "".join(kept).encode("utf-8"))
                self.handle = open(self.path, "a", encoding="utf-8")
            self.opened = True
        except OSError as exc:
            raise self._error(exc) from exc

    def _rows_before(self, iteration):
        """The file's lines (header included) for iterations before `iteration`; None when there is no file."""
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return None
        lines = self.path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = []
        for line in lines:
            try:
                row_iter = json.loads(line)["iter"] if self.json else int(line.split(",")[1])
            except (ValueError, KeyError, IndexError, TypeError):
                if not self.json and line == self.HEADER:
                    kept.append(line)
                continue
            if row_iter < iteration and line.endswith("\n"):
                kept.append(line)
        if not self.json and (not kept or kept[0] != self.HEADER):
            kept.insert(0, self.HEADER)
        return kept

    def write(self, phase, iteration, name, value):
        if self.broken:
            return
        if self.handle is None:
            self._open()
        if self.json:
            row = json.dumps({"phase": phase, "iter": iteration, "name": name, "value": float(value)}) + "\n"
        else:
            row = f"{phase},{iteration},{name},{float(value):.9g}\n"
        try:
            self.handle.write(row)
            self.handle.flush()
        except OSError as exc:
            raise self._error(exc) from exc

    def _error(self, exc):
        """The one-line error naming the file; the handle is dropped so closing cannot fail again."""
        handle, self.handle, self.broken = self.handle, None, True
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass
        return write_error(self.path, exc)

    def close(self):
        if self.handle is not None:
            handle, self.handle = self.handle, None
            try:
                handle.close()
            except OSError as exc:
                raise self._error(exc) from exc
