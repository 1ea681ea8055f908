"""Files a rewound run no longer owns, moved (never deleted) into one folder beside them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def set_aside(later: Sequence[Path], folder: Path, step: int) -> Path | None:
    """Move `later` (files written after `step` by the continuation a resume abandons) untouched into
    <folder>/superseded_at_step_<step>/ (…_2, …_3 when that exists). Returns that folder (None: nothing to move)."""
    if not later:
        return None
    aside, n = folder / f"superseded_at_step_{step:07d}", 1
    while aside.exists():
        n += 1
        aside = folder / f"superseded_at_step_{step:07d}_{n}"
    aside.mkdir()
    for path in later:
        path.rename(aside / path.name)
    return aside
