"""Guidance as a wrapper, so samplers only ever see `model(x_t, t)`: classifier-free guidance (Ho & Salimans
2022) against the unconditional branch, and autoguidance (Karras et al. 2024, EDM2) against a weaker guide model."""

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


class AutoGuided(nn.Module):
    """model(x_t, t) = g + s·(m − g), with m = net(x_t, t, cond) and g = guide(x_t, t, cond): autoguidance, where
    the guide is a weaker model of the same data and formulation (a smaller net or an earlier checkpoint).

    It works for unconditional models too (cond None: both nets are called without one). As for classifier-free
    guidance the weights sum to 1, so it is the same in ε, x_0 or v and in a formulation's D. s = 1 is the main
    net alone (one forward); otherwise each net runs once per call.
    """

    def __init__(self, net: nn.Module, guide: nn.Module, cond: Cond | None, scale: float) -> None:
        super().__init__()
        self.net, self.guide = net, guide
        self.cond, self.scale = cond, float(scale)

    def _call(self, net: nn.Module, x: Tensor, t: Tensor) -> Tensor:
        return net(x, t) if self.cond is None else net(x, t, self.cond)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        main = self._call(self.net, x, t)
        if self.scale == 1.0:
            return main
        weak = self._call(self.guide, x, t)
        return weak + self.scale * (main - weak)


def guided_for(
    model: Denoiser,
    cond_for: CondFor | None,
    indices: Sequence[int],
    scale: float = 1.0,
    negative_for: CondFor | None = None,
    guide: Denoiser | None = None,
) -> Denoiser:
    """The denoiser model(x_t, t) of the samples `indices`: with a `guide`, AutoGuided against it; else `model`
    itself when there are no conditions, or Guided with those samples' conditions (and negative ones), placed on
    the model's device and dtype."""
    device, dtype = model_device_dtype(model) or (torch.device("cpu"), torch.float32)
    if guide is not None:
        if negative_for is not None:
            raise ValueError(
                "a negative prompt guides against the unconditional branch; with guide= there is none"
            )
        cond = None if cond_for is None else to_device(cond_for(indices), device, dtype)
        return AutoGuided(model, guide, cond, scale)
    if cond_for is None:
        return model
    negative = None if negative_for is None else to_device(negative_for(indices), device, dtype)
    return Guided(model, to_device(cond_for(indices), device, dtype), scale, negative)
