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
def stop_signal_raises(
    unless_handled: bool = False, signals: tuple[int, ...] = (signal.SIGTERM,)
) -> Iterator[None]:
    """Within the block, SIGTERM (or each of `signals`) raises StoppedBySignal in the main thread; the previous
    handlers are restored. Off the main thread (which cannot set handlers) the block runs as it is; `unless_handled`
    leaves a signal that already has a handler to it (submitit's ignores SIGTERM in a job it may requeue). A signal
    the process was started ignoring stays ignored (SIGHUP under `nohup`)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    signals = tuple(s for s in signals if signal.getsignal(s) is not signal.SIG_IGN)
    if unless_handled:
        signals = tuple(s for s in signals if signal.getsignal(s) in (signal.SIG_DFL, None))

    def raise_stop(signum: int, frame: FrameType | None) -> None:
        raise StoppedBySignal(signum)

    previous = {signum: signal.signal(signum, raise_stop) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def stops_held(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Ctrl-C or SIGTERM arriving within the block takes effect as it ends, so that the few updates the block makes
    to state a stop then keeps (running statistics) are made whole or not at all. Off the main thread (which
    cannot set handlers) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: arrived.append(signum)) for signum in signals
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(arrived):
            signal.raise_signal(signum)  # the handler the block held it from acts now
