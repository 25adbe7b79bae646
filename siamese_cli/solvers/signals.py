"""Signals during training, as Caffe's defaults: SIGINT and SIGTERM stop, SIGHUP snapshots and goes on.

The handlers only record the request; the loop acts on it between iterations (and between
test batches), so a snapshot is never written from inside a half-done update.
"""
import signal
import threading

ACTIONS = {signal.SIGINT: "stop", signal.SIGTERM: "stop", signal.SIGHUP: "snapshot"}


class SignalRequests:
    """Installs the handlers for the duration of a `with` block (main thread only) and restores the old ones."""

    def __init__(self, solver):
        self.solver = solver
        self.previous = {}

    def _on_signal(self, signum, frame):
        solver = self.solver
        if solver.requested != "stop":
            solver.requested = ACTIONS[signum]
            if solver.requested == "stop":
                solver.stop_signal = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, self._on_signal) for sig in ACTIONS}
        return self

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


def exit_status(signum):
    """The shell's status for a process ended by `signum`: 128 + its number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum)
