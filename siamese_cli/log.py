"""Log lines in glog's layout, so Caffe's log parsers (parse_log.py, plot_training_log.py) read them."""
import datetime
import os
import sys
import threading


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
