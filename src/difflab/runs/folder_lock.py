"""A folder's mark file, locked by the one live process that uses the folder (a run training there, a sweep running
there): flock, so the system lets go of the lock however the process ends and a killed process leaves none stale."""

from __future__ import annotations

import os
import socket
from typing import IO

try:
    import fcntl
except ImportError:  # not POSIX (Windows): no flock, so a folder in use is not told apart there
    fcntl = None


class HeldElsewhere(Exception):
    """Another live process holds the mark; `holder` is what it wrote there (its pid and host)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


def lock_mark(mark: IO[str]) -> bool:
    """Lock the open mark file for this process: True once held. False (the file closed) where the file system
    has no locks, so nothing is told apart; HeldElsewhere (the file closed) while another live process holds it."""
    if fcntl is None:
        mark.close()
        return False
    try:
        fcntl.flock(mark.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        mark.seek(0)
        holder = mark.read().strip() or "another process"
        mark.close()
        raise HeldElsewhere(holder) from None
    # ENOLCK, EOPNOTSUPP: a file system without locks.
    except OSError:
        mark.close()
        return False
    return True


def sign(mark: IO[str]) -> None:
    """Write this process (pid and host) into the mark it holds, for the refusal another process then gives."""
    mark.seek(0)
    mark.truncate()
    mark.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
    mark.flush()
