"""A job whose ranks torchrun starts all at once, through the store its agent keeps for the whole job:

- rank 0 of train.py claims the run folder and tells the other ranks which one it is, so that every rank writes
  into that one folder. (Lightning's own launcher starts its ranks after rank 0 has claimed the folder and passes
  it to them; under torchrun each rank would otherwise pick a dated folder of its own, or find rank 1's files in the
  folder named for the run and refuse it.)
- a job torchrun restarts (--max-restarts, after a rank died) goes back into the folder its first attempt claimed,
  and resumes from the checkpoint it left there (runs.resume: as a requeued SLURM job does).
- each restarted attempt makes its process group on a store of its own: the agent's store outlives an attempt,
  and the keys the first attempt's process group left in it (the peers' addresses) are read by the next one,
  which then connects to ranks that are gone (torch issue #135712, still so in torch 2.14).
"""

from __future__ import annotations

import datetime
import os
import socket
from pathlib import Path
from typing import Any

KEY = "difflab/run_dir"
PORT_KEY = "difflab/process_group_port"
AGENT_PORT = "DIFFLAB_AGENT_STORE_PORT"  # the agent's store, once MASTER_PORT names this attempt's own
WAIT = datetime.timedelta(minutes=30)  # a failing rank 0 ends the job sooner: torchrun stops the other ranks


def under_torchrun() -> bool:
    """True in a process torchrun started with its agent's store to share values through (one process or more)."""
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" or AGENT_PORT in os.environ
    return agent_store and "MASTER_ADDR" in os.environ


def started_together() -> bool:
    """True in one of several processes torchrun started."""
    return under_torchrun() and os.environ.get("WORLD_SIZE", "1") != "1"


def restart_count() -> int:
    """How often torchrun has restarted this job's processes (0 in its first attempt, and outside torchrun)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def share_run_folder(run_dir: Path) -> None:
    """Rank 0: tell the job's other ranks, and its later attempts, the run folder it claimed (or resumed in)."""
    if under_torchrun():
        _store().set(_key(restart_count()), str(run_dir))


def shared_run_folder() -> str:
    """Another rank: the run folder rank 0 of this attempt claimed, once it has."""
    return _store().get(_key(restart_count())).decode()


def earlier_attempts_folder() -> str | None:
    """Rank 0 of a restarted job: the run folder an earlier attempt claimed; None in a first attempt, or when no
    earlier attempt got as far as claiming one."""
    if not under_torchrun() or restart_count() == 0:
        return None
    store = _store()
    for attempt in reversed(range(restart_count())):
        if store.check([_key(attempt)]):
            return store.get(_key(attempt)).decode()
    return None


def own_process_group_store() -> None:
    """Before the process group of a restarted attempt is made: point it at a store rank 0 hosts afresh (on a
    free port of its host, which the agent's store tells the others) instead of the agent's store, which still
    holds the first attempt's process-group keys. Nothing to do in a first attempt or outside torchrun."""
    if not started_together() or restart_count() == 0 or AGENT_PORT in os.environ:
        return
    store, key = _store(), f"{PORT_KEY}/{restart_count()}"
    if os.environ.get("RANK", "0") == "0":
        store.set(key, str(_free_port()))
    os.environ[AGENT_PORT] = os.environ["MASTER_PORT"]
    os.environ["MASTER_PORT"] = store.get(key).decode()
    os.environ["TORCHELASTIC_USE_AGENT_STORE"] = "False"  # torch: rank 0 hosts the store on MASTER_PORT


def _free_port() -> int:
    # Rank 0 runs on the host MASTER_ADDR names (torchrun gives global rank 0 to the agent that hosts the store).
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _key(attempt: int) -> str:
    return f"{KEY}/{attempt}"


def _store() -> Any:
    # torch only under torchrun: the launcher's checks run before torch loads.
    from torch.distributed import TCPStore

    port = int(os.environ.get(AGENT_PORT) or os.environ["MASTER_PORT"])
    return TCPStore(os.environ["MASTER_ADDR"], port, is_master=False, timeout=WAIT)
