"""Formulations through the whole stack: the config group trains each, checkpoints record it, sample.py,
difflab.load and export read it, old checkpoints load as VP, and bad values are one line before a run folder."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import CLI_FAST, FAST_TRAIN, compose_config, one_error_line, run_cli
from hydra.utils import instantiate

import difflab
from difflab.checkpoint import load_model
from difflab.diffusion.formulations import EDM, Flow, VPTraining
from difflab.diffusion.formulations.timestep_face import OWN_GRID, sampling_view
from difflab.generation.sampler import bound_sampler
from difflab.run.export import export
from difflab.run.formulation_checks import (
    build_formulation,
    check_schedule_applies,
    warn_if_zero_snr_predicts_epsilon,
)
from difflab.run.prepare import fixed_values
from difflab.run.sample import sample
from difflab.run.train import train
from difflab.runs.resume import check_resumable


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """last.ckpt of a four-step run of the toy model per formulation (each about a second)."""
    runs = {}
    for name in ("edm", "flow"):
        run = tmp_path_factory.mktemp(name) / "run"
        train(compose_config("train", [*FAST_TRAIN, f"formulation={name}"], run))
        runs[name] = run / "checkpoints" / "last.ckpt"
    return runs


def test_the_default_formulation_is_vp_on_the_schedule_with_todays_settings(tmp_path):
    cfg = compose_config("train", FAST_TRAIN, tmp_path / "run")
    module = instantiate(cfg.module)
    assert isinstance(module.formulation, VPTraining)
    assert module.formulation.weighting == "uniform" and module.formulation.offset_noise == 0.0
    assert torch.equal(module.formulation.schedule.betas, module.schedule.betas)  # no rescale


@pytest.mark.parametrize("name", ["edm", "flow"])
@pytest.mark.parametrize("sampler", ["ddim", "heun"])
def test_an_edm_or_flow_checkpoint_samples_with_any_sampler(trained, tmp_path, name, sampler):
    out = tmp_path / "out"
    cfg = compose_config(
        "sample",
        [f"ckpt={trained[name]}", "n=4", f"sampler={sampler}", "sampler.steps=3", f"out={out}"],
        tmp_path,
    )
    sample(cfg)  # refuses non-finite images (check_finite)
    images = np.load(out / "samples.npz")["images"]
    assert images.shape == (4, 8, 8, 1) and images.std() > 0


@pytest.mark.parametrize(("name", "kind"), [("edm", EDM), ("flow", Flow)])
def test_checkpoints_record_the_formulation_and_every_reader_builds_its_denoiser(trained, name, kind):
    ckpt = torch.load(trained[name], map_location="cpu", weights_only=True)
    assert ckpt["difflab_config"]["formulation"]["_target_"].endswith(kind.__name__)
    loaded = load_model(trained[name])
    assert isinstance(loaded.formulation, kind)
    pipe = difflab.load(trained[name], device="cpu")
    images = pipe.sample(3, sampler="dpm_solver", steps=4, seed=0)
    assert images.shape[0] == 3 and bool(torch.isfinite(torch.as_tensor(images, dtype=torch.float32)).all())
    # What trained it, as a user prints it (before: "EpsilonFace", the internal view the samplers call).
    assert f": UNet, formulation={name}, sampled as " in repr(pipe) and pipe.formulation == name


@pytest.mark.parametrize("name", ["edm", "flow"])
def test_the_sampling_line_names_the_formulation_not_a_prediction_type(trained, tmp_path, caplog, name):
    """Before, "DDIMSampler(…, prediction_type='epsilon', …)": the ε view the sampler sees, for a network whose
    config says prediction_type does not apply."""
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="difflab"):
        sample(
            compose_config(
                "sample", [f"ckpt={trained[name]}", "n=1", "sampler.steps=2", f"out={out}"], tmp_path
            )
        )
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("sampling 1 images with"))
    assert f"formulation={name}" in line and "prediction_type" not in line


@pytest.mark.parametrize("name", ["edm", "flow"])
def test_prediction_type_on_an_edm_or_flow_checkpoint_is_refused_as_not_applying(trained, tmp_path, name):
    """Before, sample.py prediction_type=v said it contradicted the checkpoint's "epsilon", a default that
    such a network never used."""
    out = tmp_path / "out"
    cfg = compose_config(
        "sample", [f"ckpt={trained[name]}", "n=1", "prediction_type=v", f"out={out}"], tmp_path
    )
    with pytest.raises(ValueError, match=f"prediction_type=v does not apply to .*formulation={name}"):
        sample(cfg)
    assert not out.exists()


@pytest.mark.parametrize("given", ["schedule=cosine", "schedule=linear"])
def test_a_schedule_on_an_edm_checkpoint_is_refused_as_not_applying(trained, tmp_path, given):
    # Before, schedule=cosine "contradicted" the unused linear schedule its config holds, and schedule=linear
    # was taken without a word, as train.py refuses both.
    out = tmp_path / "out"
    cfg = compose_config("sample", [f"ckpt={trained['edm']}", "n=1", given, f"out={out}"], tmp_path)
    with pytest.raises(
        ValueError, match=r"^schedule= does not apply to .*formulation=edm, which builds its own"
    ):
        sample(cfg)
    assert not out.exists()


def test_a_checkpoint_from_before_formulations_loads_and_samples_as_vp(tiny_ckpt, tmp_path):
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    del ckpt["difflab_config"]["formulation"]
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    loaded, current = load_model(old), load_model(tiny_ckpt)
    assert loaded.formulation is None and loaded.prediction_type == "epsilon"
    assert torch.equal(loaded.schedule.betas, current.schedule.betas)
    a = difflab.load(old, device="cpu").sample(2, steps=3, seed=0)
    b = difflab.load(tiny_ckpt, device="cpu").sample(2, steps=3, seed=0)
    assert torch.equal(torch.as_tensor(a), torch.as_tensor(b))
    assert ": UNet, formulation=vp, " in repr(difflab.load(old, device="cpu"))


def test_export_to_safetensors_keeps_the_formulation(trained, tmp_path):
    """(format=diffusers of edm and flow: tests/export/test_diffusers_formulations.py.)"""
    out = tmp_path / "exported"
    export(compose_config("export", [f"ckpt={trained['edm']}", "format=safetensors", f"out={out}"], tmp_path))
    assert isinstance(load_model(out).formulation, EDM)


def test_resuming_with_another_formulation_is_refused(trained, tmp_path):
    cfg = compose_config("train", [*FAST_TRAIN, "formulation=flow", f"ckpt_path={trained['edm']}"], tmp_path)
    ckpt = torch.load(trained["edm"], map_location="cpu", weights_only=True)
    with pytest.raises(ValueError, match=r"formulation\._target_=difflab\.diffusion\.formulations\.Flow"):
        check_resumable(fixed_values(cfg), lambda: instantiate(cfg.model), ckpt, trained["edm"])


def test_a_bad_formulation_value_is_one_line_before_a_run_folder(tmp_path):
    """Each bad value's message is tested on its constructor (test_formulations.py); here, that the CLI says it
    before Hydra makes the run folder."""
    run = tmp_path / "run"
    overrides = ["formulation=edm", "formulation.sigma_data=0", f"hydra.run.dir={run}"]
    line = one_error_line(run_cli("train.py", *FAST_TRAIN, *overrides))
    assert line == "error: formulation=edm: sigma_data must be > 0 (got 0)"
    assert not run.exists()


@pytest.mark.parametrize("name", ["edm", "flow"])
def test_a_prediction_type_the_formulation_would_ignore_is_refused(tmp_path, name):
    """edm and flow fix what their network predicts; before, prediction_type=v trained as if it was not given."""
    run = tmp_path / "run"
    overrides = [f"formulation={name}", "prediction_type=v", f"hydra.run.dir={run}"]
    line = one_error_line(run_cli("train.py", *CLI_FAST, *overrides))
    assert line.startswith(f"error: prediction_type=v does not apply to formulation={name}: ")
    assert "use formulation=vp" in line
    assert not run.exists()


@pytest.mark.parametrize(
    ("name", "schedule"),
    [("edm", "schedule=cosine"), ("flow", "schedule=cosine"), ("edm", "schedule.timesteps=500")],
)
def test_a_schedule_the_formulation_would_ignore_is_refused(tmp_path, name, schedule):
    """edm and flow build their own noise levels; before, schedule=cosine trained with rc 0 and no word."""
    run = tmp_path / "run"
    overrides = [f"formulation={name}", schedule, f"hydra.run.dir={run}"]
    line = one_error_line(run_cli("train.py", *CLI_FAST, *overrides))
    assert line.startswith(f"error: {schedule} does not apply to formulation={name}: ")
    assert "use formulation=vp" in line
    assert not run.exists()


def test_the_schedule_check_reads_no_hydra_state_outside_hydra(tmp_path):
    """train(cfg) with a composed config: nothing says what was typed, so the default schedule is not refused."""
    cfg = compose_config("train", [*FAST_TRAIN, "formulation=edm", "schedule=cosine"], tmp_path)
    check_schedule_applies(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["formulation=flow", "formulation.weighting=edm"], "formulation=flow: unknown weighting 'edm'"),
        (
            ["formulation.weighting=min_snr", "formulation.min_snr_gamma=0"],
            "formulation=vp: min_snr_gamma must be > 0",
        ),
    ],
)
def test_the_preflight_names_the_formulation_of_a_bad_value(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        build_formulation(compose_config("train", [*FAST_TRAIN, *overrides], tmp_path))
    assert "\n" not in str(error.value)


def test_zero_terminal_snr_with_epsilon_prediction_is_warned_of(tmp_path):
    # Before, taken without a word: at the last timestep a predicted ε gives no x0.
    cfg = compose_config("train", [*FAST_TRAIN, "formulation.zero_terminal_snr=true"], tmp_path)
    with pytest.warns(
        UserWarning, match=r"zero_terminal_snr=true with prediction_type=epsilon: .* prediction_type=v"
    ):
        warn_if_zero_snr_predicts_epsilon(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = ["formulation.zero_terminal_snr=true", "prediction_type=v"]
        warn_if_zero_snr_predicts_epsilon(compose_config("train", [*FAST_TRAIN, *v], tmp_path))


def test_min_snr_and_offset_noise_train_through_the_config(tmp_path):
    overrides = ["formulation.weighting=min_snr", "formulation.offset_noise=0.1", "prediction_type=v"]
    overrides += ["formulation.zero_terminal_snr=true", "trainer.max_steps=2"]
    run = tmp_path / "run"
    metrics = train(compose_config("train", [*FAST_TRAIN, *overrides], run))
    assert np.isfinite(float(metrics["train/loss"]))
    loaded = load_model(run / "checkpoints" / "last.ckpt")
    assert loaded.schedule.alphas_cumprod[-1].item() <= 2**-24  # the rescaled schedule is what samples


@pytest.mark.parametrize(("recipe", "kind"), [("digits_edm_cpu", EDM), ("digits_flow_cpu", Flow)])
def test_the_formulation_recipes_are_digits_cpu_with_another_formulation(recipe, kind, tmp_path):
    base = compose_config("train", ["experiment=digits_cpu"], tmp_path)
    cfg = compose_config("train", [f"experiment={recipe}"], tmp_path)
    assert isinstance(instantiate(cfg.formulation), kind)
    for key in ("model", "data", "optim", "lr_scheduler", "trainer", "metrics", "cpu_threads", "seed"):
        assert cfg[key] == base[key], key
    for key in base.callbacks.fid:
        if key != "sampler":  # the same sampler and steps, on the formulation's grid (below)
            assert cfg.callbacks.fid[key] == base.callbacks.fid[key], key
    # The grids and FID callbacks walk the formulation's own grid without the recipe asking for it.
    _, schedule, prediction_type = sampling_view(None, None, None, instantiate(cfg.formulation))
    sampler = bound_sampler(instantiate(cfg.callbacks.fid.sampler), schedule, prediction_type, latent=False)
    assert (
        sampler.timestep_spacing == OWN_GRID[kind.name]
        and int(sampler.timesteps[0]) == schedule.timesteps - 1
    )


def sampled_by_cli(ckpt, tmp_path, name, overrides):
    """sample.py's images and settings.json for `overrides` (ddim, sample.py's default sampler)."""
    out = tmp_path / name
    sample(
        compose_config(
            "sample", [f"ckpt={ckpt}", "n=3", "sampler.steps=3", f"out={out}", *overrides], tmp_path
        )
    )
    return np.load(out / "samples.npz")["images"], json.loads((out / "settings.json").read_text())


@pytest.mark.parametrize(("name", "own"), [("edm", "karras"), ("flow", "trailing")])
def test_an_edm_or_flow_checkpoint_samples_on_its_own_grid_by_default(trained, tmp_path, name, own):
    default, settings = sampled_by_cli(trained[name], tmp_path, "default", [])
    walked, _ = sampled_by_cli(trained[name], tmp_path, own, [f"sampler.timestep_spacing={own}"])
    leading, _ = sampled_by_cli(trained[name], tmp_path, "leading", ["sampler.timestep_spacing=leading"])
    assert np.array_equal(default, walked)  # from the formulation's σ_max
    assert not np.array_equal(default, leading)  # an explicit spacing still wins
    assert settings["sampler"]["timestep_spacing"] == own  # settings.json says which grid was walked
    pipe = difflab.load(trained[name], device="cpu")
    assert pipe.make_sampler("ddim").timestep_spacing == own
    assert pipe.make_sampler("ddim", timestep_spacing="leading").timestep_spacing == "leading"


def test_an_edm_checkpoint_walks_edms_own_grid_down_to_sigma_min(trained):
    # Before, "trailing" over the table: 80, 30.1, 9.72, 2.50, 0.465, 0.051 at 6 steps, never reaching σ_min, so
    # sample.py's Euler in N steps was not EDM's (nor diffusers' EDMEulerScheduler's) in N steps.
    sampler = difflab.load(trained["edm"], device="cpu").make_sampler("euler", steps=6)
    walked = torch.tensor(sampler.formulation.sigma_grid(sampler.timesteps), dtype=torch.float64)
    edm = EDM()
    torch.testing.assert_close(walked, edm.sigmas(6), rtol=5e-3, atol=0)  # to the table's 1,000 levels


def test_a_vp_checkpoint_samples_on_the_samplers_own_grids_as_before(tiny_ckpt, tmp_path):
    default, settings = sampled_by_cli(tiny_ckpt, tmp_path, "default", [])
    leading, _ = sampled_by_cli(tiny_ckpt, tmp_path, "leading", ["sampler.timestep_spacing=leading"])
    assert np.array_equal(default, leading) and settings["sampler"]["timestep_spacing"] == "leading"
    pipe = difflab.load(tiny_ckpt, device="cpu")
    spacings = {name: pipe.make_sampler(name).timestep_spacing for name in ("ddpm", "ddim", "euler", "heun")}
    assert spacings == {"ddpm": "leading", "ddim": "leading", "euler": "trailing", "heun": "trailing"}
    assert pipe.make_sampler("dpm_solver").timestep_spacing == "trailing"
