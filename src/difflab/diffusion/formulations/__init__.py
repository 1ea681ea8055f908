"""Formulations on the continuous core: how a network's output becomes D(x, σ) → x̂_0, their σ(t) and α(t),
and their grids of noise levels. Today's DDPM tables are the first (`VP`)."""

from .vp import VP, VPDenoiser

__all__ = ["VP", "VPDenoiser"]
