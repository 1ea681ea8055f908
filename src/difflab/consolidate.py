"""Put a sharded checkpoint (trainer.strategy.state_dict_type=sharded) back together into one .ckpt file:

    python -m difflab.consolidate <run>/checkpoints/last.ckpt               # -> <run>/checkpoints/last.full.ckpt
    python -m difflab.consolidate <run>/checkpoints/step_0001000.ckpt out=model.ckpt

sample.py, evaluate.py, export.py and difflab.load read the folder itself (its shards put together in memory);
one file is for sharing or for tools that read one. It needs the whole model in CPU memory, on one process.
Lightning's `lightning.pytorch.utilities.consolidate_checkpoint` reads the model under the key "model" that its
FSDPStrategy writes, not the "state_dict" of the ModelParallelStrategy that trainer=fsdp uses.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .run.errors import USER_ERRORS, exit_if_stopped, one_line

USAGE = "usage: python -m difflab.consolidate <sharded checkpoint folder> [out=<file.ckpt>]"


def consolidate(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the sharded checkpoint `folder` as one checkpoint file (`out`, default <name>.full.ckpt beside it);
    an existing `out` is never overwritten. Returns the file written."""
    import torch

    from .checkpoint_file import read_checkpoint_file
    from .io.atomic import atomic_file
    from .io.sharded_checkpoint import consolidated_name, is_sharded_checkpoint

    folder = Path(folder)
    if not is_sharded_checkpoint(folder):
        raise ValueError(
            f"{folder} is not a sharded checkpoint (a folder with .metadata and meta.pt); a .ckpt file needs no "
            "consolidation"
        )
    target = Path(out) if out is not None else consolidated_name(folder)
    if target.exists():
        raise FileExistsError(f"{target} exists: give another out=<file.ckpt> (nothing was written)")
    checkpoint = read_checkpoint_file(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(target, exclusive=True) as file:
        torch.save(checkpoint, file)
    return target


def main(argv: list[str] | None = None) -> int:
    """Consolidate the folder the command line names; 2 on a user error, 143 or 130 when stopped (SIGTERM,
    Ctrl-C: the file is written whole or not at all)."""
    args = sys.argv[1:] if argv is None else argv
    with exit_if_stopped("python -m difflab.consolidate"):
        return consolidate_command(args)


def consolidate_command(args: list[str]) -> int:
    """main() within its stop handling."""
    try:
        extra = [a for a in args[1:] if not a.startswith("out=")]
        if not args or args[0].startswith("-") or "=" in args[0] or extra:
            raise ValueError(USAGE)
        out = next((a.removeprefix("out=") for a in args[1:]), None)
        print(consolidate(args[0], out))
    except USER_ERRORS as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
