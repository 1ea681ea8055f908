"""Whether a state dict fits a network: what a checkpoint, a model folder or diffusers weights lack, add or
shape differently, in one line."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..listing import listed


def state_mismatch(expected: Mapping[str, torch.Tensor], found: Mapping[str, torch.Tensor]) -> str | None:
    """What keeps `found` weights from loading into a model whose state is `expected` (None when they fit)."""
    problems = []
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [
        f"{k} {tuple(found[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and tuple(found[k].shape) != tuple(v.shape)
    ]
    for what, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("wrong shape (checkpoint vs model)", shapes),
    ):
        if items:
            problems.append(f"{len(items)} {what}: {listed(items, 3)}")
    return "; ".join(problems) or None
