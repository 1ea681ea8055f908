"""torch.compile of the denoiser: the whole net (compile=true) or each repeated block (compile=regional)."""

from __future__ import annotations

from torch import nn

from ..models.blocks import repeated_blocks


def compile_denoiser(net: nn.Module, mode: bool | str, **options: object) -> None:
    """Compile `net` in place as `mode` says. Regional compilation compiles each repeated block: blocks of the same
    shapes reuse one compiled graph, so it compiles in a fraction of the whole net's time, and it works under FSDP
    (each block is its own FSDP unit). A net that lists no repeated blocks is compiled whole. `options` go to
    torch.compile (a backend, a mode)."""
    if mode is False:
        return
    blocks = repeated_blocks(net) if mode == "regional" else []
    for block in blocks:
        block.compile(**options)
    if not blocks:
        net.compile(**options)
