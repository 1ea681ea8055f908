"""Fully sharded data parallel (FSDP2 `fully_shard`) through Lightning's ModelParallelStrategy.

Each repeated block of the net (difflab.models.blocks) is one FSDP unit, then the net itself: a block's
parameters are all-gathered just before it runs and freed after, so a rank holds 1/W of the weights, gradients,
optimizer state and EMA, plus one block at a time in full.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn
from torch.distributed.fsdp import fully_shard
from torch.utils.checkpoint import checkpoint

from ..models.blocks import repeated_blocks

# "full": one file gathered on rank 0; "sharded": one shard file per rank in a folder (training/sharded_checkpoint)
STATE_DICT_TYPES = ("full", "sharded")


def checkpoint_activations(block: nn.Module) -> None:
    """Recompute `block`'s activations in the backward pass instead of keeping them (less memory, ~1/3 more
    compute). The forward is wrapped in place, so parameter names (and checkpoints) do not change."""
    forward = block.forward
    block.forward = functools.partial(checkpoint, forward, use_reentrant=False)  # type: ignore[method-assign]


def is_sharded(module: nn.Module) -> bool:
    """True when `module`'s parameters are DTensors (fully_shard has been applied to it)."""
    return any(hasattr(p, "device_mesh") for p in module.parameters())


class ShardedStrategy(ModelParallelStrategy):
    """FSDP2 over every process (data parallel only): `shard(net)` is what DiffusionModule.configure_model and the
    EMA callback call, so the weights and their average are sharded the same way.

    state_dict_type: "full" writes one checkpoint file gathered on rank 0; "sharded" a folder in which every rank
    writes its own shards (weights, EMA, optimizer state) and no rank gathers the whole model. sample.py and
    difflab.load read both; a resume reads either kind, whichever this run writes, also on another number of
    processes than wrote it (torch.distributed.checkpoint reshards a sharded one on load; a full one is broadcast
    from rank 0 and cut into this run's shards).
    """

    def __init__(
        self, activation_checkpointing: bool = False, state_dict_type: str = "full", **kwargs: Any
    ) -> None:
        if state_dict_type not in STATE_DICT_TYPES:
            raise ValueError(
                f"trainer.strategy.state_dict_type={state_dict_type} is not one of {', '.join(STATE_DICT_TYPES)}"
            )
        super().__init__(save_distributed_checkpoint=state_dict_type == "sharded", **kwargs)
        self.activation_checkpointing = activation_checkpointing
        self.state_dict_type = state_dict_type

    def setup_environment(self) -> None:
        # All processes shard one data-parallel dimension (Lightning's "auto" would make the processes of a node
        # a tensor-parallel group).
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()

    def shard(self, net: nn.Module) -> None:
        """fully_shard each repeated block of `net` (with activation checkpointing if asked), then `net`."""
        if is_sharded(net):
            return
        mesh = self.device_mesh["data_parallel"]
        net.to(
            memory_format=torch.contiguous_format
        )  # FSDP2 shards contiguous parameters only (not NHWC ones)
        for block in repeated_blocks(net):
            if self.activation_checkpointing:
                checkpoint_activations(block)
            fully_shard(block, mesh=mesh)
        fully_shard(net, mesh=mesh)

    def save_checkpoint(
        self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any | None = None
    ) -> None:
        from ..io.atomic import temp_name
        from ..io.sharded_checkpoint import is_sharded_checkpoint
        from .sharded_checkpoint import publish, save_sharded

        target = Path(self.broadcast(str(filepath)))
        if self.state_dict_type == "sharded":
            save_sharded(self, checkpoint, target)
        elif is_sharded_checkpoint(target):
            # A full save over a sharded folder (a sharded run resumed with full checkpoints): Lightning would
            # delete the folder on every rank before writing, so a failed write would leave no checkpoint at all.
            # Write the file under a temp name and swap it in as a sharded save does.
            temp = Path(self.broadcast(str(temp_name(target))))
            super().save_checkpoint(checkpoint, temp, storage_options)
            if self.is_global_zero:
                publish(temp, target)
            self.barrier("full checkpoint published")
        else:
            super().save_checkpoint(checkpoint, target, storage_options)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict[str, Any]:
        from ..io.sharded_checkpoint import is_sharded_checkpoint
        from .sharded_checkpoint import ShardedEntry

        checkpoint = super().load_checkpoint(checkpoint_path, weights_only)
        path = Path(self.broadcast(str(checkpoint_path)))
        if is_sharded_checkpoint(path):
            # Lightning has loaded "state_dict" and the optimizers; the raw weights are the EMA callback's to load.
            checkpoint["current_model_state"] = ShardedEntry(path, "current_model_state")
        return checkpoint


def sharded_state(module: nn.Module) -> dict[str, Any]:
    """`module`'s state dict as this rank's shards (DTensors, CPU), as Lightning's strategy gives the weights'."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(cpu_offload=True))


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of a (possibly sharded) module as full CPU tensors, on every rank (a collective:
    every rank must call it)."""
    out = {}
    for name, value in module.state_dict().items():
        full = value.full_tensor() if hasattr(value, "full_tensor") else value
        out[name] = full.detach().cpu()
    return out


def load_full_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a full (unsharded) state dict, present on every rank, into a sharded module: each rank keeps its shards."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True, strict=True))


def reshard(net: nn.Module) -> None:
    """Free the gathered full weights of every FSDP unit of `net`, so its parameters are shards again (an eval
    forward leaves the root unit's weights gathered)."""
    from torch.distributed.fsdp import FSDPModule

    for module in net.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
