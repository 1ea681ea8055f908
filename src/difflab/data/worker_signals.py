"""Stop signals in data loader workers. A cluster's time limit (SLURM), `timeout` and `kill -- -<pgid>` signal every
process of a run, its loader workers too; so does SLURM's requeue signal (SIGUSR1/SIGUSR2, whose default action
ends a process). A worker ended by one took the batches under way with it: the run stopped with a loader error
instead of finishing its step and saving. The main process handles those signals, so its workers leave them to
it, as torch's workers already leave Ctrl-C (SIGINT) to it. SIGTERM from the main process itself (torch ending a
worker that does not stop at shutdown) still ends a worker. SIGHUP (the terminal closed: it goes to the whole
foreground process group) is the main process's too."""

from __future__ import annotations

import functools
import os
import signal
import threading
from collections.abc import Callable

# SLURM's requeue signals and a closed terminal's SIGHUP: only the run's main process acts on them, so a worker
# always ignores them.
LEFT_TO_THE_MAIN_PROCESS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP)


def leaving_stop_signals_to_this_process() -> Callable[[int], None]:
    """A DataLoader worker_init_fn that leaves the stop signals to the process building the loader."""
    return functools.partial(_leave_stop_signals_to, os.getpid())


def _leave_stop_signals_to(main_pid: int, worker_id: int) -> None:
    for signum in LEFT_TO_THE_MAIN_PROCESS:
        signal.signal(signum, signal.SIG_IGN)
    if not hasattr(signal, "sigwaitinfo"):  # macOS: SIGTERM keeps its default there
        return
    # Blocked in this thread before any other starts, so in all of them: only the waiter below receives it.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    threading.Thread(target=_end_on_sigterm_from, args=(main_pid,), daemon=True, name="sigterm").start()


def _end_on_sigterm_from(main_pid: int) -> None:
    while True:
        if signal.sigwaitinfo({signal.SIGTERM}).si_pid == main_pid:
            os._exit(128 + signal.SIGTERM)
