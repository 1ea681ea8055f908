"""A DDP process that ended with an error before rank 0 did: rank 0's own error is then only its echo (a
collective that lost its peer), so the run ends naming that process instead."""

from __future__ import annotations

import signal


class OtherProcessFailed(ValueError):
    """Another process of the run ended with an error; its own message is already on the console."""


def other_process_failed(ended: dict[int, int]) -> OtherProcessFailed:
    """The one line for the first of `ended` ({local rank: exit code}, negative: the signal that killed it)."""
    rank, code = min(ended.items())
    if code > 0:
        how = f"ended with exit {code} (its error is above)"
    else:
        try:
            how = f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            how = f"was killed by signal {-code}"
        if -code == getattr(signal, "SIGKILL", None):  # it printed nothing: say what usually sends it
            how += " (as the system does when it runs out of memory: see dmesg)"
    return OtherProcessFailed(f"DDP process {rank} {how}; the others stopped with it")
