"""A train.py job whose ranks torchrun starts all at once: rank 0 claims the run folder and tells the other ranks
which one it is through torchrun's own store, so that every rank writes into that one folder. (Lightning's own
launcher starts its ranks after rank 0 has claimed the folder and passes it to them; under torchrun each rank would
otherwise pick a dated folder of its own, or find rank 1's files in the folder named for the run and refuse it.)"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

KEY = "difflab/run_dir"
WAIT = datetime.timedelta(minutes=30)  # a failing rank 0 ends the job sooner: torchrun stops the other ranks


def started_together() -> bool:
    """True in one of several processes torchrun started, with its agent's store to share values through."""
    return (
        os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True" and os.environ.get("WORLD_SIZE", "1") != "1"
    )


def share_run_folder(run_dir: Path) -> None:
    """Rank 0: tell the job's other ranks the run folder it claimed (or resumed in)."""
    if started_together():
        _store().set(_key(), str(run_dir))


def shared_run_folder() -> str:
    """Another rank: the run folder rank 0 claimed, once it has."""
    return _store().get(_key()).decode()


def _key() -> str:
    restarts = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")  # a restarted job claims its folder anew
    return f"{KEY}/{restarts}"


def _store() -> Any:
    # torch only under torchrun: the launcher's checks run before torch loads.
    from torch.distributed import TCPStore

    return TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=WAIT)
