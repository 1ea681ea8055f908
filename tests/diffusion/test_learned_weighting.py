"""EDM2's learned-uncertainty loss weighting (Karras et al. 2024, eq. 21): loss = λ(σ)/e^{u(σ)} ‖D − x_0‖² + u(σ),
with u a small learned function of the noise embedding that trains with the net and never reaches sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FAST_TRAIN, compose_config

from difflab.checkpoint import load_model
from difflab.diffusion.formulations import EDM, Flow
from difflab.run.sample import sample
from difflab.run.train import train


def test_the_learned_loss_is_eq_21_on_hand_computed_values():
    edm = EDM(weighting="learned")
    with torch.no_grad():  # u(σ) = 0.3 at every σ, for checkable numbers
        edm.uncertainty.linear.weight.zero_()
        edm.uncertainty.linear.bias.fill_(0.3)
    x0 = torch.tensor([[[[0.5, -0.25]]], [[[1.0, 0.0]]]])
    g = torch.Generator().manual_seed(0)
    loss = edm.loss(lambda x, t: torch.full_like(x, 0.1), x0, generator=g)

    g = torch.Generator().manual_seed(0)  # the same draws, by hand: σ first, then ε
    sigma = (torch.randn(2, generator=g) * 1.2 - 1.2).exp().view(2, 1, 1, 1)
    noise = torch.randn(x0.shape, generator=g)
    x = x0 + sigma * noise
    sd = 0.5
    c_skip, c_out = sd**2 / (sigma**2 + sd**2), sigma * sd / (sigma**2 + sd**2).sqrt()
    denoised = c_skip * x + c_out * 0.1
    lam = (sigma**2 + sd**2) / (sigma * sd) ** 2
    expected = (lam / np.exp(0.3) * (denoised - x0) ** 2 + 0.3).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_u_trained_alone_reaches_the_log_of_each_noise_levels_weighted_mse():
    """At the optimum of w/e^u·e² + u, e^u = E[w·e²]: u(σ) is the log of the weighted MSE at σ."""
    edm = EDM(weighting="learned")
    g = torch.Generator().manual_seed(1)
    sigma = torch.tensor([0.01, 0.1, 0.5, 2.0, 20.0]).repeat_interleave(64)
    squared_error = torch.rand(len(sigma), 3, 4, 4, generator=g) * torch.linspace(0.1, 2.0, len(sigma)).view(
        -1, 1, 1, 1
    )
    weighted = edm.loss_weight(sigma).view(-1, 1, 1, 1) * squared_error
    optimizer = torch.optim.Adam(edm.uncertainty.parameters(), lr=0.05)
    for _ in range(1500):
        optimizer.zero_grad()
        edm.uncertainty_loss(weighted, sigma).backward()
        optimizer.step()
    levels = sigma.unique()
    per_level_mse = torch.stack([weighted[sigma == s].mean() for s in levels])
    learned = edm.uncertainty(levels.log() / 4).detach()
    assert torch.allclose(learned, per_level_mse.log(), atol=2e-3)


def test_learned_weighting_is_edms_only_and_a_bad_choice_is_one_line():
    assert EDM().uncertainty is None  # the other weightings learn nothing
    with pytest.raises(ValueError, match="unknown weighting 'learned' for formulation=flow"):
        Flow(weighting="learned")


def test_a_learned_weighting_run_trains_u_saves_it_and_samples_without_it(tmp_path):
    run = tmp_path / "run"
    overrides = [*FAST_TRAIN, "formulation=edm", "formulation.weighting=learned"]
    metrics = train(compose_config("train", overrides, run))
    assert np.isfinite(float(metrics["train/loss"]))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for key in ("state_dict", "current_model_state"):  # EMA and raw weights both hold u, so a resume keeps it
        weight = ckpt[key]["loss_weighting.linear.weight"]
        assert weight.abs().sum() > 0  # trained away from its zero start, by the optimizer of the net
    outs = []
    for name in ("with_u", "without_u"):
        path = run / "checkpoints" / "last.ckpt"
        if name == "without_u":  # sampling reads only the net: dropping u changes nothing
            for key in ("state_dict", "current_model_state"):
                ckpt[key] = {k: v for k, v in ckpt[key].items() if not k.startswith("loss_weighting.")}
            path = tmp_path / "without_u.ckpt"
            torch.save(ckpt, path)
        out = tmp_path / name
        sample(compose_config("sample", [f"ckpt={path}", "n=3", "sampler.steps=3", f"out={out}"], tmp_path))
        outs.append(np.load(out / "samples.npz")["images"])
    assert np.array_equal(*outs) and outs[0].std() > 0
    assert load_model(path).formulation.weighting == "learned"


def test_a_learned_weighting_run_resumes_with_its_u(tmp_path):
    run = tmp_path / "run"
    overrides = [*FAST_TRAIN, "formulation=edm", "formulation.weighting=learned"]
    train(compose_config("train", overrides, run))
    last = run / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    for key in ("state_dict", "current_model_state"):  # a value a fresh u (zero) could not reach in 2 steps
        ckpt[key]["loss_weighting.linear.bias"] = torch.tensor([5.0])
    torch.save(ckpt, last)
    train(compose_config("train", [*overrides, "trainer.max_steps=6", "ckpt_path=last"], run))
    resumed = torch.load(last, map_location="cpu", weights_only=True)
    assert resumed["global_step"] == 6
    bias = float(resumed["current_model_state"]["loss_weighting.linear.bias"])
    assert bias != 5.0 and abs(bias - 5.0) < 0.1  # resumed from the saved u and trained on
