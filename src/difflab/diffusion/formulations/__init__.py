"""Formulations on the continuous core: how a network's output becomes D(x, σ) → x̂_0, their σ(t) and α(t),
their training draws, targets and loss weightings, and their grids of noise levels: VP (today's DDPM tables,
`VP` for sampling and `VPTraining` for training), `EDM` and `Flow` (rectified flow / flow matching)."""

from .edm import EDM, EDMDenoiser
from .flow import Flow, FlowDenoiser
from .vp import VP, VPDenoiser
from .vp_training import VPTraining
from .weighting import edm_weight, min_snr_weight
from .zero_snr import rescale_zero_terminal_snr

__all__ = [
    "EDM",
    "VP",
    "EDMDenoiser",
    "Flow",
    "FlowDenoiser",
    "VPDenoiser",
    "VPTraining",
    "edm_weight",
    "min_snr_weight",
    "rescale_zero_terminal_snr",
]
