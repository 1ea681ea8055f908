"""trainer.strategy.state_dict_type=sharded: every rank writes its own shards of the weights, the EMA and the
optimizer state (torch.distributed.checkpoint), no full copy is gathered anywhere.

A checkpoint is a folder named as a file would be (last.ckpt/, step_0001000.ckpt/): one `__<rank>_0.distcp`
per rank, torch.distributed.checkpoint's `.metadata` index and Lightning's `meta.pt` (step, loops, callbacks,
config). It is written under a temp name beside its target and renamed once every rank has finished, so a
reader sees a whole checkpoint or none.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..io.atomic import NoSpaceLeft, fsync_folder, is_out_of_space, temp_name
from ..io.sharded_checkpoint import META_FILE, OPTIMIZER_PREFIX, data_only_reader, rank_errors

# The entries of a Lightning checkpoint that hold a rank's shards (the EMA's weights and the raw ones beside
# them); the optimizer states go in as optimizer_<i>, as Lightning's ModelParallelStrategy writes them.
SHARDED_ENTRIES = ("state_dict", "current_model_state")


def save_sharded(strategy: Any, checkpoint: dict[str, Any], target: Path) -> None:
    """Write `checkpoint` (its entries holding this rank's shards) as a sharded checkpoint folder at `target`.

    A collective: every rank calls it with the same `target`. A full disk on any rank is one NoSpaceLeft line on
    every rank, and the previous `target` stays as it was."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    temp = Path(strategy.broadcast(str(temp_name(target))))  # the same temp name on every rank
    state = {key: checkpoint.pop(key) for key in SHARDED_ENTRIES if key in checkpoint}
    for index, optimizer_state in enumerate(checkpoint.pop("optimizer_states", [])):
        state[f"{OPTIMIZER_PREFIX}{index}"] = optimizer_state
    failure: BaseException | None = None
    try:
        dcp.save(state, checkpoint_id=temp)  # each rank writes its file, then rank 0 the index
        if strategy.is_global_zero:
            with (temp / META_FILE).open("wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
    except (CheckpointException, OSError, RuntimeError) as error:
        failure = error
    # Every rank learns whether any rank failed, so that none renames a checkpoint another could not finish.
    failed = torch.tensor(float(failure is not None), device=strategy.root_device)
    failed = bool(strategy.reduce(failed, reduce_op="sum") > 0)
    if failed:
        if strategy.is_global_zero:
            shutil.rmtree(temp, ignore_errors=True)
        if failure is not None and _is_out_of_space(failure):
            raise NoSpaceLeft(target) from failure
        if failure is not None:
            raise failure
        raise RuntimeError(f"another rank failed to write its shard of {target}; nothing was renamed")
    if strategy.is_global_zero:
        publish(temp, target)
    strategy.barrier("sharded checkpoint published")


def _is_out_of_space(error: BaseException) -> bool:
    """A full disk, also when torch.distributed.checkpoint wraps it (CheckpointException keeps each rank's
    error in `failures`)."""
    return is_out_of_space(error) or any(is_out_of_space(e) for e in rank_errors(error))


def publish(temp: Path, target: Path) -> None:
    """Rename the finished folder `temp` to `target`. A previous `target` (folder or file) is renamed away first
    and deleted after: between the two renames `target` is absent, never partial."""
    previous = None
    if target.exists() or target.is_symlink():
        previous = temp_name(target)
        os.replace(target, previous)
    os.replace(temp, target)
    fsync_folder(target.parent)
    if previous is not None:
        if previous.is_dir() and not previous.is_symlink():
            shutil.rmtree(previous)
        else:
            previous.unlink()


@dataclass(frozen=True)
class ShardedEntry:
    """An entry of a sharded checkpoint (a state dict of the net) not loaded yet: what a resume finds in place of
    "current_model_state", loaded by the EMA callback straight into the sharded module, shard by shard."""

    path: Path
    key: str

    def load_into(self, module: nn.Module) -> None:
        """Load this entry into the sharded `module`: each rank reads its own shards (a collective)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

        state = {self.key: get_model_state_dict(module)}
        dcp.load(state, storage_reader=data_only_reader(self.path))
        set_model_state_dict(module, state[self.key])
