"""A small terminal progress bar: drawn on a terminal, silent elsewhere (logs, pipes, CI)."""
import sys
import time


class Progress:
    """`with Progress(total, "label") as bar: bar.update(n, loss=0.1)`.

    Draws to stderr only when stderr is a terminal, at most ten times a second.
    """

    def __init__(self, total, label="", stream=None, enabled=None):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self._info = ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def update(self, n=1, **info):
        self.done += n
        if info:
            self._info = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        now = time.perf_counter()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now):
        fraction = min(self.done / self.total, 1.0)
        width = 30
        filled = int(fraction * width)
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        bar = "#" * filled + "-" * (width - filled)
        line = f"\r{self.label} [{bar}] {self.done}/{self.total} {rate:.1f}/s eta {eta:.0f}s {self._info}"
        self.stream.write(line[:200] + "\033[K")
        self.stream.flush()

    def clear(self):
        """Erase the bar so a log line can be printed cleanly; it redraws on the next update."""
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._last = 0.0

    def close(self):
        if self.enabled:
            self._draw(time.perf_counter())
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False
