"""Mixed-precision generation: the denoiser's forward under bf16 autocast, everything a sampler computes around
it (ᾱ, x_t updates, noise) in float32/64, as a wrapper that samplers see as a plain model(x_t, t)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..value_rules import PRECISIONS


def check_precision(precision: str) -> None:
    """A one-line error for any precision but fp32 / bf16."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; choose one of {', '.join(PRECISIONS)}")


class Autocast(nn.Module):
    """net(x_t, t, …) run under torch.autocast(bfloat16), its output cast back to x_t's dtype (float32), so a
    sampler's arithmetic never sees bf16. A module holding `net`, so that samplers find its device and dtype."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = self.net(x, t, *args, **kwargs)
        return out.to(x.dtype)


def with_precision(net: Any, precision: str = "fp32") -> Any:
    """`net` itself for fp32; for bf16 the net wrapped in Autocast (refused on a GPU without bf16)."""
    check_precision(precision)
    if precision == "fp32":
        return net
    device = next((p.device for p in net.parameters()), None) if isinstance(net, nn.Module) else None
    if device is not None and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ValueError(
            f"precision=bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use fp32"
        )
    return Autocast(net)
