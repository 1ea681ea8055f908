"""SIGTERM (a cluster's time limit, `scancel`, `kill`) as an exception in the main thread, so work that writes its
results as it goes can remove what it wrote before the process ends, as it does on Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


class StoppedBySignal(BaseException):
    """The process was asked to stop. A BaseException, as KeyboardInterrupt, so no `except Exception` keeps it."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process a signal ended


@contextlib.contextmanager
def stop_signal_raises(unless_handled: bool = False) -> Iterator[None]:
    """Within the block, SIGTERM raises StoppedBySignal in the main thread; the previous handler is restored. Off
    the main thread (which cannot set handlers) the block runs as it is; so it does with `unless_handled` where
    SIGTERM already has a handler (submitit's ignores it in a job it may requeue: its requeue signal decides)."""
    handled = signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, None)
    if threading.current_thread() is not threading.main_thread() or (unless_handled and handled):
        yield
        return

    def raise_stop(signum: int, frame: FrameType | None) -> None:
        raise StoppedBySignal(signum)

    previous = signal.signal(signal.SIGTERM, raise_stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
