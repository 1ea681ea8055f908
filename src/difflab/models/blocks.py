"""The repeated blocks of a denoiser: the unit that sharding wraps and regional compilation compiles once."""

from __future__ import annotations

from torch import nn


def repeated_blocks(net: nn.Module) -> list[nn.Module]:
    """The submodules of `net` whose class is listed in its `repeated_block_types` (outermost first; none when the
    class lists none). A new network opts in with one class attribute, e.g. `repeated_block_types = (DiTBlock,)`."""
    types = tuple(getattr(net, "repeated_block_types", ()))
    if not types:
        return []
    found: list[nn.Module] = []
    for module in net.modules():
        # A block nested inside another listed block is already covered by the outer one.
        if isinstance(module, types) and not any(module in set(outer.modules()) for outer in found):
            found.append(module)
    return found
