"""export.py format=diffusers of edm and flow checkpoints: the folder loads with diffusers, and its scheduler's loop
(EDMEulerScheduler, FlowMatchEulerDiscreteScheduler) around the exported UNet2DModel draws what difflab's Euler
sampler draws from the same checkpoint and noise."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from conftest import FAST_TRAIN, compose_config

import difflab
from difflab.checkpoint import load_model
from difflab.diffusion import Euler
from difflab.run.export import export
from difflab.run.train import train

diffusers = pytest.importorskip("diffusers")

STEPS = 6


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(checkpoint, exported folder) of a four-step toy run per formulation (flow with SD3's shift 3 and a grid
    starting at t_max 0.9, which diffusers' scheduler has no setting for)."""
    folders = {}
    for name, extra in (("edm", []), ("flow", ["formulation.shift=3", "formulation.t_max=0.9"])):
        base = tmp_path_factory.mktemp(name)
        train(compose_config("train", [*FAST_TRAIN, f"formulation={name}", *extra], base / "run"))
        ckpt, out = base / "run" / "checkpoints" / "last.ckpt", base / "exported"
        export(compose_config("export", [f"ckpt={ckpt}", "format=diffusers", f"out={out}"], base))
        folders[name] = (ckpt, out)
    return folders


def start_noise(loaded) -> torch.Tensor:
    return torch.randn(4, *loaded.sample_shape, generator=torch.Generator().manual_seed(0))


def test_edm_exports_to_edm_euler_scheduler_and_samples_as_difflab(exported):
    ckpt, out = exported["edm"]
    loaded = load_model(ckpt)
    edm = loaded.formulation
    unet = diffusers.UNet2DModel.from_pretrained(out, subfolder="unet").eval()
    scheduler = diffusers.EDMEulerScheduler.from_pretrained(out, subfolder="scheduler")
    assert (scheduler.config.sigma_data, scheduler.config.sigma_min) == (edm.sigma_data, edm.sigma_min)
    assert (scheduler.config.sigma_max, scheduler.config.rho) == (edm.sigma_max, edm.rho)
    scheduler.set_timesteps(STEPS)
    noise = start_noise(loaded)
    x = noise * edm.sigma_max
    with torch.no_grad():
        for t in scheduler.timesteps:  # diffusers' loop: scale the input, call the net at c_noise, step
            output = unet(scheduler.scale_model_input(x, t), t.expand(len(x))).sample
            x = scheduler.step(output, t, x).prev_sample
        ours = Euler().sample(edm.denoiser(loaded.net.eval(), None), noise * edm.sigma_max, edm.sigmas(STEPS))
    assert ours.std() > 0.1
    torch.testing.assert_close(x, ours, rtol=1e-4, atol=1e-4)


def test_flow_exports_to_flow_match_euler_scheduler_and_samples_as_difflab(exported):
    ckpt, out = exported["flow"]
    loaded = load_model(ckpt)
    flow = loaded.formulation
    unet = diffusers.UNet2DModel.from_pretrained(out, subfolder="unet").eval()
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler.from_pretrained(out, subfolder="scheduler")
    assert scheduler.config.shift == flow.shift == 3.0
    # difflab's grid (t uniform from t_max = 0.999) before the shift, which the scheduler applies itself.
    scheduler.set_timesteps(sigmas=torch.linspace(flow.t_max, 0.0, STEPS + 1)[:-1].tolist())
    noise = start_noise(loaded)
    # difflab's samplers start from unit-variance noise on the VP scale, x_σ = √(1 + σ_max²)·ε: on the flow
    # scale x_t = (1 − t)·x_σ, √((1 − t_max)² + t_max²)·ε (before, the README's x = ε missed it by 3e-3).
    sigma_max = float(flow.sigmas(STEPS)[0])
    t_max = sigma_max / (1 + sigma_max)
    x = noise * math.sqrt((1 - t_max) ** 2 + t_max**2)
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(unet(x, t.expand(len(x))).sample, t, x).prev_sample
        start = noise * math.sqrt(1 + sigma_max**2)
        ours = Euler().sample(flow.denoiser(loaded.net.eval(), None), start, flow.sigmas(STEPS))
    assert ours.std() > 0.1
    torch.testing.assert_close(x, ours, rtol=1e-4, atol=1e-4)


def test_an_edm_preconditioning_diffusers_computes_otherwise_is_refused_naming_it(
    exported, tmp_path, monkeypatch
):
    ckpt, _ = exported["edm"]
    monkeypatch.setattr(
        diffusers.EDMEulerScheduler, "precondition_noise", lambda self, sigma: torch.log(sigma)
    )
    out = tmp_path / "refused"
    with pytest.raises(ValueError, match=r"diffusers' EDMEulerScheduler computes c_noise otherwise") as error:
        export(compose_config("export", [f"ckpt={ckpt}", "format=diffusers", f"out={out}"], tmp_path))
    assert "\n" not in str(error.value) and not out.exists()


def test_a_class_conditional_flow_export_names_its_scheduler_not_ddpm_pipeline(tmp_path, caplog):
    run, out = tmp_path / "run", tmp_path / "exported"
    train(compose_config("train", [*FAST_TRAIN, "formulation=flow", "model.num_classes=10"], run))
    with caplog.at_level("INFO", logger="difflab"):
        export(
            compose_config(
                "export",
                [f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "format=diffusers", f"out={out}"],
                tmp_path,
            )
        )
    (how,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("exported ")]
    assert "class_labels=" in how and "FlowMatchEulerDiscreteScheduler" in how
    assert "DDPMPipeline" not in how


@pytest.mark.parametrize("name", ["edm", "flow"])
def test_difflab_load_reads_the_export_back_and_samples_bit_for_bit_as_the_checkpoint(exported, name):
    """Before, difflab.load(<the exported folder>) said it "is not a difflab model folder"."""
    ckpt, out = exported[name]
    ours, back = difflab.load(ckpt), difflab.load(out)
    assert (back.weights, back.global_step) == (ours.weights, ours.global_step)
    formulation = load_model(out).formulation
    assert formulation.name == name and (
        name == "edm" or (formulation.shift, formulation.t_max) == (3.0, 0.9)
    )
    for sampler in ("euler", "heun"):
        np.testing.assert_array_equal(
            back.sample(4, sampler=sampler, steps=4, seed=1), ours.sample(4, sampler=sampler, steps=4, seed=1)
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"shift_terminal": 0.1},
            "its FlowMatchEulerDiscreteScheduler computes the shifted time input 1000·t",
        ),
        ({"use_dynamic_shifting": True}, "use_dynamic_shifting=true .* has no difflab counterpart"),
    ],
)
def test_a_flow_scheduler_that_samples_otherwise_is_refused_naming_why(exported, tmp_path, change, message):
    _, out = exported["flow"]
    folder = tmp_path / "copy"
    shutil.copytree(out, folder)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), **change}))
    with pytest.raises(ValueError, match=message):
        difflab.load(folder)
