"""A DDP process that ended with an error before rank 0 did: rank 0's own error is then only its echo (a
collective that lost its peer), so the run ends naming that process instead."""

from __future__ import annotations

import signal


class OtherProcessFailed(ValueError):
    """Another process of the run ended with an error; its own message is already on the console."""


# What a collective says when the process on its other end has gone (gloo; NCCL): this process's error is then
# only an echo of what happened there.
LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "remote process exited")
# How long rank 0 waits then for that process to end by itself, so that it can be named: it has closed its
# connections and is ending, which takes a loaded machine more than the second given a process that is not.
LOST_PEER_GRACE_S = 20.0


def lost_a_peer(error: BaseException) -> bool:
    """Whether `error` is a collective's report that another process of the run has gone."""
    return isinstance(error, RuntimeError) and any(text in str(error) for text in LOST_PEER)


def failed_elsewhere(error: BaseException, ended: dict[int, int]) -> OtherProcessFailed | None:
    """The one line to end the run with instead of `error` when `ended` (the processes that ended by themselves:
    {local rank: exit code}) explains it: one that failed (none is named for a success unless `error` is a lost
    peer: rank 0's own failure, such as a full disk, can come after the others have finished)."""
    failed = {rank: code for rank, code in ended.items() if code != 0}
    if failed:
        return other_process_failed(failed)
    if ended and lost_a_peer(error):
        rank = min(ended)
        return OtherProcessFailed(
            f"DDP process {rank} finished the run while this one waited for it in a collective: the processes "
            "took different paths, a difflab bug (please report it with this log)"
        )
    return None


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
