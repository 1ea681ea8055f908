"""How the line of a stopped or failed run says to resume it: into the run's own folder. `ckpt_path=<file>` alone
starts a new dated folder, and `ckpt_path=last` alone looks in one too unless the command named hydra.run.dir."""

from __future__ import annotations

from pathlib import Path

from ..overrides import pasteable


def resume_advice(checkpoint: Path) -> str:
    """`resume with ckpt_path=last hydra.run.dir=<run>` for a run's checkpoints/last.ckpt (its file for another
    checkpoint of the run); a checkpoint outside a run's checkpoints/ folder is named alone."""
    if checkpoint.parent.name != "checkpoints":
        return f"resume with {pasteable('ckpt_path', checkpoint)}"
    which = "last" if checkpoint.name == "last.ckpt" else str(checkpoint)
    return (
        f"resume with {pasteable('ckpt_path', which)} {pasteable('hydra.run.dir', checkpoint.parent.parent)}"
    )
