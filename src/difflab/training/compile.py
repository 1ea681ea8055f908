"""torch.compile of the denoiser: the whole net (compile=true) or each repeated block (compile=regional)."""

from __future__ import annotations

import torch
from torch import nn

from ..compat import raise_recompile_limit
from ..models.blocks import repeated_blocks
from .sharding import is_sharded


def compile_denoiser(net: nn.Module, mode: bool | str, **options: object) -> None:
    """Compile `net` in place as `mode` says. Regional compilation compiles each repeated block: blocks of the same
    shapes reuse one compiled graph, so it compiles in a fraction of the whole net's time, and it works under FSDP
    (each block is its own FSDP unit). A net that lists no repeated blocks is compiled whole. `options` go to
    torch.compile (a backend, a mode)."""
    if mode is False:
        return
    blocks = repeated_blocks(net) if mode == "regional" else []
    if blocks:
        # The blocks share one forward, so Dynamo counts every block of another structure or shape (a U-Net's
        # levels differ in channels, attention and shortcut) as a recompile of it; past its limit (8) the rest would
        # silently run eager. Room for each block in training, evaluation and a second batch size:
        raise_recompile_limit(4 * len(blocks))
        # Static shapes: with dynamic ones inductor failed on the U-Net's blocks under FSDP ("cannot determine truth
        # value of Relational", contiguous weights and NHWC inputs); a new batch size compiles once more instead.
        options = {"dynamic": False, **options}
    for block in blocks:
        if is_sharded(block):
            # FSDP2's all-gather and reshard hooks stay eager around the compiled forward (traced into the graph,
            # they failed in inductor on a change of batch size).
            block.forward = torch.compile(block.forward, **options)  # type: ignore[method-assign]
        else:
            block.compile(**options)
    if not blocks:
        net.compile(**options)
