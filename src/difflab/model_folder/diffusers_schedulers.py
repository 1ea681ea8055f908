"""The diffusers scheduler that samples an edm or flow model, built from its formulation, and what of its math
differs from difflab's (checked on numbers, so another diffusers version that computes otherwise is refused).

edm → `EDMEulerScheduler` (σ_data, σ_min, σ_max, ρ; its "epsilon" prediction type is EDM's F with Table 1's
c_skip, c_out, c_in and c_noise = ln(σ)/4); flow → `FlowMatchEulerDiscreteScheduler` (shift; time input 1000·t,
velocity ε − x_0). What is training only (P_mean, P_std, the weighting, t_sampling) has nothing to map.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import torch

from ..diffusion.formulations.flow import TIME_SCALE, shift_time

CHECK_SIGMAS = (0.002, 0.05, 0.5, 3.0, 80.0)  # noise levels at which the preconditionings are compared
CHECK_STEPS = 7
TOLERANCE = 1e-5


def formulation_scheduler(diffusers: ModuleType, formulation: Any) -> Any:
    """The diffusers scheduler of an edm or flow model, configured from its formulation."""
    if formulation.name == "edm":
        return diffusers.EDMEulerScheduler(
            sigma_min=formulation.sigma_min,
            sigma_max=formulation.sigma_max,
            sigma_data=formulation.sigma_data,
            rho=formulation.rho,
            sigma_schedule="karras",
            prediction_type="epsilon",  # EDM's F: D = c_skip x + c_out F
            final_sigmas_type="zero",
        )
    if formulation.name == "flow":
        return diffusers.FlowMatchEulerDiscreteScheduler(
            num_train_timesteps=int(TIME_SCALE), shift=formulation.shift
        )
    raise ValueError(f"formulation={formulation.name} has no diffusers scheduler mapping here")


def scheduler_differences(formulation: Any, scheduler: Any) -> list[str]:
    """The parts of difflab's math that `scheduler` computes otherwise (empty: the export samples as difflab)."""
    if formulation.name == "edm":
        return _edm_differences(formulation, scheduler)
    return _flow_differences(formulation, scheduler)


def diffusers_refusal(formulation: Any, scheduler: Any) -> str | None:
    """Why a model of `formulation` cannot be exported with diffusers' `scheduler` (None: it can; vp, whose
    scheduler is the DDPMScheduler of its tables, always can); what to do instead is the caller's to say."""
    if getattr(formulation, "name", "vp") == "vp":
        return None
    differences = scheduler_differences(formulation, scheduler)
    if not differences:
        return None
    return (
        f"diffusers' {type(scheduler).__name__} computes {', '.join(differences)} otherwise than difflab's "
        f"formulation={formulation.name}"
    )


def _differ(ours: torch.Tensor, theirs: Any) -> bool:
    theirs = torch.as_tensor(theirs, dtype=torch.float64).flatten()
    return theirs.shape != ours.shape or not torch.allclose(theirs, ours, rtol=TOLERANCE, atol=TOLERANCE)


def _edm_differences(edm: Any, scheduler: Any) -> list[str]:
    sigma = torch.tensor(CHECK_SIGMAS, dtype=torch.float64)
    c_skip, c_out, c_in, c_noise = edm.preconditioning(sigma)
    one, zero = torch.ones_like(sigma), torch.zeros_like(sigma)
    theirs = {
        "c_skip": scheduler.precondition_outputs(one, zero, sigma),
        "c_out": scheduler.precondition_outputs(zero, one, sigma),
        "c_in": scheduler.precondition_inputs(one, sigma),
        "c_noise": scheduler.precondition_noise(sigma),
    }
    ours = {"c_skip": c_skip, "c_out": c_out, "c_in": c_in, "c_noise": c_noise}
    differences = [name for name in ours if _differ(ours[name], theirs[name])]
    scheduler.set_timesteps(CHECK_STEPS)
    if _differ(edm.sigmas(CHECK_STEPS), scheduler.sigmas):
        differences.append("the ρ grid")
    return differences


def _flow_differences(flow: Any, scheduler: Any) -> list[str]:
    t = torch.linspace(flow.t_max, 0.0, CHECK_STEPS + 1, dtype=torch.float64)
    scheduler.set_timesteps(sigmas=t[:-1].tolist())
    shifted = shift_time(t, flow.shift)
    differences = []
    if _differ(shifted[:-1] * TIME_SCALE, scheduler.timesteps):
        differences.append("the shifted time input 1000·t")
    x, velocity = torch.ones(2), torch.full((2,), 0.5)  # one Euler step of dx/dt = v from t_0 to t_1
    stepped = scheduler.step(velocity, scheduler.timesteps[0], x).prev_sample
    if _differ((x + (shifted[1] - shifted[0]) * velocity).double(), stepped):
        differences.append("the velocity ε − x_0")
    return differences
