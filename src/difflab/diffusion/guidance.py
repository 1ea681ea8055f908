"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper: samplers only ever see `model(x_t, t)`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .conditioning import Cond, CondFor, batch_size, concat, to_device, unconditional, with_drop
from .samplers.base import Denoiser, model_device_dtype


class Guided(nn.Module):
    """model(x_t, t) = m_u + s·(m_c − m_u), with m_c = net(x_t, t, cond) and m_u the unconditional (or the
    negative condition's) prediction, both from one batched forward.

    s = 1 is the plain conditional net and s = 0 the unconditional one (each a single forward, exactly). The
    combination is linear with weights summing to 1, so it is the same whether the net predicts ε, x_0 or v, and a
    formulation's D (affine in the net's output) is guided the same way: D_u + s(D_c − D_u). A module (holding `net`),
    so that samplers find the device and dtype of its parameters.
    """

    def __init__(self, net: nn.Module, cond: Cond, scale: float = 1.0, negative: Cond | None = None) -> None:
        super().__init__()
        self.net = net
        # An explicit drop flag on both sides, so the two halves of the batch stack key for key.
        self.cond = with_drop(cond, torch.zeros(batch_size(cond), dtype=torch.bool))
        self.scale = float(scale)
        self.negative = (
            None
            if negative is None
            else with_drop(negative, torch.zeros(batch_size(negative), dtype=torch.bool))
        )

    def _uncond(self) -> Cond:
        return self.negative if self.negative is not None else unconditional(self.cond)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if self.scale == 1.0:
            return self.net(x, t, self.cond)
        if self.scale == 0.0:
            return self.net(x, t, self._uncond())
        both = self.net(torch.cat([x, x]), torch.cat([t, t]), concat(self._uncond(), self.cond))
        out_u, out_c = both.chunk(2)
        return out_u + self.scale * (out_c - out_u)


def guided_for(
    model: Denoiser,
    cond_for: CondFor | None,
    indices: Sequence[int],
    scale: float = 1.0,
    negative_for: CondFor | None = None,
) -> Denoiser:
    """The denoiser model(x_t, t) of the samples `indices`: `model` itself when there are no conditions, else
    Guided with those samples' conditions (and negative ones) placed on the model's device and dtype."""
    if cond_for is None:
        return model
    device, dtype = model_device_dtype(model) or (torch.device("cpu"), torch.float32)
    negative = None if negative_for is None else to_device(negative_for(indices), device, dtype)
    return Guided(model, to_device(cond_for(indices), device, dtype), scale, negative)
