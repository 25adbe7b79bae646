"""A small terminal progress bar: drawn on a terminal, silent elsewhere (logs, pipes, CI)."""
import sys
import time


class Progress:
    """`with Progress(total, "label") as bar: bar.update(n, loss=0.1)`.

    Draws to stderr only when stderr is a terminal, at most ten times a second. `initial` counts
    work done before this run (a resumed training run): the bar shows it, while the rate and the
    ETA measure only what this run did since `start` (so a resume does not look instantaneous).
    """

    def __init__(self, total, label="", stream=None, enabled=None, initial=0, clock=time.perf_counter):
        self.total = max(int(total), 1)
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.initial = self.done = int(initial)
        self.clock = clock
        self.start = clock()
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
        now = self.clock()
        if self.enabled and (now - self._last > 0.1 or self.done >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now):
        fraction = min(self.done / self.total, 1.0)
        width = 30
        filled = int(fraction * width)
        rate, eta = self.rate_eta(now)
        bar = "#" * filled + "-" * (width - filled)
        line = f"\r{self.label} [{bar}] {self.done}/{self.total} {rate:.1f}/s eta {eta:.0f}s {self._info}"
        self.stream.write(line[:200] + "\033[K")
        self.stream.flush()

    def rate_eta(self, now=None):
        """(items per second, seconds left), both from this run's own work since `start`."""
        elapsed = (self.clock() if now is None else now) - self.start
        rate = (self.done - self.initial) / elapsed if elapsed > 0 else 0.0
        eta = max(self.total - self.done, 0) / rate if rate > 0 else 0.0
        return rate, eta

    def clear(self):
        """Erase the bar so a log line can be printed cleanly; it redraws on the next update."""
        if self.enabled:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._last = 0.0

    def close(self):
        if self.enabled:
            self._draw(self.clock())
            self.stream.write("\n")
            self.stream.flush()
            self.enabled = False
