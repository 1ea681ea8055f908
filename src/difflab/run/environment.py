"""Before Hydra composes: variables from a `.env` file (W&B keys, DIFFLAB_DATA, …), so secrets and machine
paths stay out of configs and command lines. Variables already set in the environment win."""

from __future__ import annotations

import sys
from pathlib import Path

from dotenv import find_dotenv, load_dotenv


def load_env_files() -> list[Path]:
    """Load the `.env` beside the entry script (the project folder) and the nearest one above the current
    folder; returns the files read."""
    candidates = [Path(sys.argv[0]).resolve().parent / ".env"]
    found = find_dotenv(usecwd=True)
    if found:
        candidates.append(Path(found).resolve())
    read = []
    for path in dict.fromkeys(candidates):  # unique, in order
        if path.is_file():
            load_dotenv(path, override=False)
            read.append(path)
    return read
