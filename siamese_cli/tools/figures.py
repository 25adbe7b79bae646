"""Matplotlib figures saved by file extension, without pyplot unless a window is wanted.

A plain `Figure` renders through Agg (png) or the svg/pdf backends, so the
pictures work with no display and leave pyplot's global backend alone.
"""
import io
import os
import sys
from pathlib import Path

from ..errors import SiameseError
from ..io.files import write_bytes_atomic

FORMATS = ("png", "svg", "pdf")


def picture_format(out):
    """The format named by `out`'s extension, or a SiameseError listing the ones we write."""
    suffix = Path(out).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        shown = f"'.{suffix}'" if suffix else "no extension"
        raise SiameseError(f"{out}: unknown picture format ({shown}); end the name in .png, .svg or .pdf")
    return suffix


def has_display():
    """Whether a window can open: always on macOS and Windows, with $DISPLAY or $WAYLAND_DISPLAY elsewhere."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def new_figure(figsize, show=False):
    """A Figure that can be saved anywhere; a pyplot one only when `show` and a display exist."""
    if show and has_display():
        import matplotlib.pyplot as plt

        return plt.figure(figsize=figsize)
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def save_figure(fig, out, dpi=120):
    """Write `fig` to `out` in the format of its extension, atomically.

    The picture is rendered in memory first, so a failing write (a full disk, a missing
    folder) is always our one-line error, never one from inside a matplotlib backend.
    """
    fmt = picture_format(out)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=dpi, bbox_inches="tight")
    write_bytes_atomic(out, buffer.getvalue())
    return out


def show_figure(fig):
    """Open `fig` in a window where there is a display; say so on stderr where there is none."""
    if not has_display():
        print("note: no display ($DISPLAY is not set); the picture was only written to the file", file=sys.stderr)
        return
    import matplotlib.pyplot as plt

    plt.show()
