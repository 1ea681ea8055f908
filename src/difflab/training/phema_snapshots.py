"""Post-hoc EMA snapshot files: `<run>/phema/snapshots/step_<step>.pt`, one per snapshot step, each holding the
network's power-function EMA of every tracked σ_rel at that step. Written whole or not at all; read as data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..checkpoint_file import why_torch_file_unreadable
from ..io.set_aside import set_aside
from .atomic_checkpoint_io import atomic_torch_save

SNAPSHOT_FORMAT = "difflab-phema-snapshot/1"
SNAPSHOT_FOLDER = Path("phema") / "snapshots"  # inside the run folder
_NAME = re.compile(r"step_(\d{7,})\.pt")


@dataclass(frozen=True)
class Snapshot:
    """One snapshot file: the step it was taken at and the σ_rel of each profile it holds."""

    path: Path
    step: int
    sigma_rels: tuple[float, ...]


def snapshot_path(folder: Path, step: int) -> Path:
    """Where the snapshot of `step` goes in `folder`."""
    return folder / f"step_{step:07d}.pt"


def write_snapshot(folder: Path, step: int, sigma_rels: list[float], states: list[dict[str, Tensor]]) -> Path:
    """Save the profiles' network states (CPU copies) as the snapshot of `step`, atomically."""
    path = snapshot_path(folder, step)
    payload = {
        "format": SNAPSHOT_FORMAT,
        "step": int(step),
        "sigma_rels": [float(s) for s in sigma_rels],
        "states": [{k: v.detach().cpu() for k, v in state.items()} for state in states],
    }
    atomic_torch_save(payload, path)
    return path


def read_snapshot(path: Path, sigma_rels: tuple[float, ...] | None = None) -> dict[str, Any]:
    """A snapshot's contents, loaded weights-only (data, never code); one-line error for a foreign file or,
    when `sigma_rels` is given, one whose profiles are others."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for damaged files
        # Before, torch's own words: "105" for a text file, "[Errno 22] Invalid argument" for a cut one.
        raise ValueError(
            f"could not read post-hoc EMA snapshot {path}: {why_torch_file_unreadable(path, error)}"
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != SNAPSHOT_FORMAT:
        raise ValueError(f"{path} is not a difflab post-hoc EMA snapshot")
    if sigma_rels is not None and tuple(payload["sigma_rels"]) != tuple(sigma_rels):
        raise ValueError(
            f"{path} holds sigma_rels {payload['sigma_rels']}, the run's others {list(sigma_rels)}"
        )
    return payload


def list_snapshots(folder: Path) -> list[Snapshot]:
    """The snapshots in `folder` by step. Steps come from the names and the σ_rels from the first file only (a
    run's profiles never change: a resume with others is refused), so listing a long run is one read; a reader
    checks each file's own σ_rels when it loads it (`read_snapshot(path, sigma_rels)`)."""
    paths = (
        [p for p in sorted(folder.glob("step_*.pt")) if _NAME.fullmatch(p.name)] if folder.is_dir() else []
    )
    if not paths:
        return []
    sigma_rels = tuple(read_snapshot(paths[0])["sigma_rels"])
    return [Snapshot(p, int(p.stem[len("step_") :]), sigma_rels) for p in paths]


def set_aside_later_snapshots(folder: Path, step: int) -> Path | None:
    """A resume from `step` rewinds the run: snapshots taken after it belong to the abandoned continuation and
    move, untouched, into <folder>/superseded_at_step_<step>/ (as checkpoints do). Returns that folder."""
    later = [
        p for p in sorted(folder.glob("step_*.pt")) if _NAME.fullmatch(p.name) and int(p.stem[5:]) > step
    ]
    return set_aside(later, folder, step)
