"""guide=<checkpoint> (autoguidance) from sample.py, evaluate.py and difflab.load: the guide is checked against
the model before anything is written, and guidance= then pulls away from the guide's prediction."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import compose_config, with_other_weights

import difflab
from difflab.checkpoint import CONFIG_KEY
from difflab.run.sample import sample

SMALL = ["n=4", "sampler=ddim", "sampler.steps=3", "seed=3", "cpu_threads=1"]


def sample_py(ckpt: Path, out: Path, *overrides: str) -> np.ndarray:
    sample(compose_config("sample", [f"ckpt={ckpt}", f"out={out}", *SMALL, *overrides], out))
    return np.load(out / "samples.npz")["images"]


@pytest.fixture(scope="module")
def weaker(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny_ckpt with noise added to its weights: a model of the same data and schedule that predicts otherwise."""
    return with_other_weights(tiny_ckpt, tmp_path_factory.mktemp("guide") / "weaker.ckpt")


def test_a_guide_equal_to_the_model_changes_nothing_and_another_one_does(tiny_ckpt, weaker, tmp_path, caplog):
    plain = sample_py(tiny_ckpt, tmp_path / "plain")
    # g + s(m − g) = m when the guide is the model itself: the unconditional model takes guidance= with a guide.
    with caplog.at_level(logging.WARNING, logger="difflab"):
        same = sample_py(tiny_ckpt, tmp_path / "same", f"guide={tiny_ckpt}", "guidance=3")
    np.testing.assert_array_equal(same, plain)
    assert "holds the same weights as" in caplog.text and "changes nothing" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="difflab"):
        guided = sample_py(tiny_ckpt, tmp_path / "guided", f"guide={weaker}", "guidance=3")
    assert "holds the same weights" not in caplog.text
    assert np.abs(guided.astype(int) - plain.astype(int)).mean() > 1
    settings = json.loads((tmp_path / "guided" / "settings.json").read_text())
    assert settings["guide"] == str(weaker) and settings["guidance"] == 3.0


def test_load_guides_as_sample_py_does(tiny_ckpt, weaker, tmp_path):
    expected = sample_py(tiny_ckpt, tmp_path / "cli", f"guide={weaker}", "guidance=2")
    pipe = difflab.load(tiny_ckpt)
    kwargs = {"sampler": "ddim", "steps": 3, "seed": 3, "guidance": 2.0}
    np.testing.assert_array_equal(pipe.sample(4, guide=weaker, **kwargs), expected)
    np.testing.assert_array_equal(pipe.sample(4, guide=difflab.load(weaker), **kwargs), expected)


def test_a_guide_of_other_data_is_refused_before_anything_is_written(tiny_ckpt, tmp_path):
    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt[CONFIG_KEY]["data"]["image_size"] = 16  # the same network, trained on 16×16 images
    other = tmp_path / "other.ckpt"
    torch.save(ckpt, other)
    out = tmp_path / "out"
    with pytest.raises(
        ValueError, match=r"^guide=.*other.ckpt cannot guide .*images \(1, 16, 16\) vs \(1, 8, 8\)"
    ):
        sample_py(tiny_ckpt, out, f"guide={other}", "guidance=2")
    assert not out.exists()


def test_without_a_guide_an_unconditional_model_still_refuses_guidance(tiny_ckpt, tmp_path):
    with pytest.raises(ValueError, match="needs a conditional model or guide=<a weaker model>"):
        sample_py(tiny_ckpt, tmp_path / "out", "guidance=2")


@pytest.mark.slow
def test_training_grids_are_autoguided_and_a_wrong_guide_stops_the_run_before_it_starts(
    tiny_ckpt, weaker, tmp_path
):
    from conftest import CLI_FAST, one_error_line, run_cli

    run = tmp_path / "run"
    grid = ["callbacks.sample_grid.guidance=2", "trainer.max_steps=2"]
    result = run_cli(
        "train.py", *CLI_FAST, *grid, f"callbacks.sample_grid.guide={weaker}", f"hydra.run.dir={run}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    plain = tmp_path / "plain"  # the same run without the guide: the same weights, another grid
    assert run_cli("train.py", *CLI_FAST, "trainer.max_steps=2", f"hydra.run.dir={plain}").returncode == 0
    guided_grid, plain_grid = (folder / "samples" / "final.png" for folder in (run, plain))
    assert guided_grid.read_bytes() != plain_grid.read_bytes()

    ckpt = torch.load(tiny_ckpt, weights_only=True)
    ckpt[CONFIG_KEY]["data"]["image_size"] = 16
    other = tmp_path / "other.ckpt"
    torch.save(ckpt, other)
    refused = tmp_path / "refused"
    result = run_cli(
        "train.py", *CLI_FAST, *grid, f"callbacks.sample_grid.guide={other}", f"hydra.run.dir={refused}"
    )
    line = one_error_line(result)
    assert (
        line.startswith("error: callbacks.sample_grid.guide: guide=")
        and "images (1, 16, 16) vs (1, 8, 8)" in line
    )
    assert not refused.exists()
    # A grid's guide at its default guidance 1 would change nothing: refused before the run starts too.
    result = run_cli(
        "train.py", *CLI_FAST, f"callbacks.sample_grid.guide={weaker}", f"hydra.run.dir={refused}"
    )
    assert one_error_line(result).startswith(
        f"error: callbacks.sample_grid.guide={weaker} has no effect at callbacks.sample_grid.guidance=1"
    )
    assert not refused.exists()


def test_a_guide_of_another_formulation_is_refused_by_name():
    from types import SimpleNamespace

    from difflab.diffusion import NoiseSchedule
    from difflab.diffusion.formulations import EDM
    from difflab.generation.autoguide import check_guide

    def model(formulation):
        edm = (
            formulation is not None
        )  # each formulation's own noise levels and settings, as trained ones hold
        return SimpleNamespace(
            formulation=formulation,
            sample_shape=(1, 8, 8),
            prediction_type="epsilon",
            schedule=NoiseSchedule.from_name("cosine" if edm else "linear"),
            condition=None,
            num_classes=None,
            config={"formulation": {"rho": 7.0, "sigma_max": 80.0}} if edm else {},
        )

    check_guide(model(EDM()), model(EDM()), "main.ckpt", "guide.ckpt")  # the same formulation: accepted
    with pytest.raises(ValueError) as raised:
        check_guide(model(EDM()), model(None), "main.ckpt", "guide.ckpt")
    # Before, the formulation's own settings followed ("formulation.rho None vs 7.0; formulation.sigma_max …").
    assert str(raised.value) == (
        "guide=guide.ckpt cannot guide main.ckpt: it must model the same data the same way (formulation vp vs edm)"
    )


def test_a_guide_on_other_noise_levels_names_the_settings_behind_them():
    # Before, a flow guide with shift=3 was refused with "(schedule NoiseSchedule(name='flow_levels', …) vs
    # NoiseSchedule(name='flow_levels', …))": the same words twice.
    from types import SimpleNamespace

    from difflab.diffusion import NoiseSchedule
    from difflab.generation.autoguide import check_guide

    def model(name, formulation):
        return SimpleNamespace(
            sample_shape=(1, 8, 8),
            prediction_type="epsilon",
            schedule=NoiseSchedule.from_name(name),
            condition=None,
            num_classes=None,
            config={
                "schedule": {"_target_": "from_name", "name": name},
                "formulation": {"weighting": name, **formulation},
            },
        )

    with pytest.raises(
        ValueError,
        match=r"\(schedule.name cosine vs linear; formulation.shift 3.0 vs 1.0; formulation.t_max 0.99 vs None\)$",
    ):
        main, guide = model("linear", {"shift": 1.0}), model("cosine", {"shift": 3.0, "t_max": 0.99})
        check_guide(main, guide, "main.ckpt", "guide.ckpt")


def test_a_guide_denoising_other_latents_or_pixels_is_refused_by_name():
    # Before, a latent model guided by a latent model of another autoencoder (latents of the same shape) sampled
    # without a word, mixing predictions of different things; a pixel guide failed deep in its U-Net.
    from types import SimpleNamespace

    from difflab.diffusion import NoiseSchedule
    from difflab.generation.autoguide import check_guide

    def model(autoencoder_hash):
        latents = None
        if autoencoder_hash is not None:
            latents = SimpleNamespace(autoencoder=SimpleNamespace(weights_hash=autoencoder_hash))
        schedule = NoiseSchedule.from_name("cosine")
        return SimpleNamespace(
            formulation=None, sample_shape=(3, 8, 8), prediction_type="epsilon", schedule=schedule,
            condition=None, num_classes=None, config={}, latents=latents,
        )  # fmt: skip

    check_guide(model("ab12"), model("ab12"), "main.ckpt", "guide.ckpt")  # the same autoencoder: accepted
    with pytest.raises(ValueError, match=r"latents of autoencoder cd34 vs latents of autoencoder ab12\)$"):
        check_guide(model("ab12"), model("cd34"), "main.ckpt", "guide.ckpt")
    with pytest.raises(ValueError, match=r"pixels vs latents of autoencoder ab12\)$"):
        check_guide(model("ab12"), model(None), "main.ckpt", "guide.ckpt")


def test_a_guide_at_guidance_1_is_refused_not_ignored(tiny_ckpt, weaker, tmp_path):
    # guide + 1·(model − guide) is the model alone: before, the guide was loaded, recorded and never changed a pixel.
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"^guide=.*weaker.ckpt has no effect at guidance=1"):
        sample_py(tiny_ckpt, out, f"guide={weaker}")
    assert not out.exists()
    with pytest.raises(ValueError, match=r"^guide=.*weaker.ckpt has no effect at guidance=1"):
        difflab.load(tiny_ckpt).sample(2, steps=2, guide=str(weaker))


def test_an_empty_guide_or_a_guide_at_guidance_0_is_refused(tiny_ckpt, weaker, tmp_path):
    # Before, guide= (an unset $GUIDE) read the current folder's checkpoints/last.ckpt as the guide, and a guide at
    # guidance=0 gave the guide's own samples byte for byte, recorded as guided sampling.
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"^guide= is empty: give a weaker checkpoint"):
        sample_py(tiny_ckpt, out, "guide=", "guidance=2")
    with pytest.raises(ValueError, match=r"^guide=.*weaker.ckpt at guidance=0 gives the guide's own samples"):
        sample_py(tiny_ckpt, out, f"guide={weaker}", "guidance=0")
    assert not out.exists()


def test_an_autoencoder_for_a_pixel_model_is_refused_not_ignored(tiny_ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"^autoencoder=.*given, but .* is not a latent diffusion model"):
        difflab.load(tiny_ckpt, autoencoder=str(tiny_ckpt))


def test_a_guide_that_cannot_be_read_is_named_as_the_guide(tiny_ckpt, tmp_path):
    # Before: "checkpoint not found: …", which did not say it was the guide, not ckpt=.
    with pytest.raises(ValueError, match=r"^guide=.*nope.ckpt: checkpoint not found"):
        sample_py(tiny_ckpt, tmp_path / "out", f"guide={tmp_path / 'nope.ckpt'}", "guidance=2")


def test_a_run_folder_without_last_ckpt_names_its_newest_checkpoint(tiny_ckpt, tmp_path):
    import shutil

    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_ckpt, tmp_path / "run" / "checkpoints" / "step_0000002.ckpt")
    with pytest.raises(FileNotFoundError, match=r"a run folder without last.ckpt: .*step_0000002.ckpt$"):
        difflab.load(tmp_path / "run")


def test_a_super_resolution_guide_of_another_factor_is_refused_by_name():
    # Before, an 8x model guided a 2x one without a word: both make 8-pixel images from a low-res one upsampled to
    # that size, so nothing else told them apart.
    from types import SimpleNamespace

    from difflab.diffusion import NoiseSchedule
    from difflab.generation.autoguide import check_guide

    def model(factor):
        return SimpleNamespace(
            formulation=None, sample_shape=(1, 8, 8), prediction_type="epsilon",
            schedule=NoiseSchedule.from_name("linear"), condition="superres", num_classes=None,
            config={"data": {"sr_factor": factor}}, latents=None, net=torch.nn.Linear(1, int(factor)),
        )  # fmt: skip

    check_guide(model(2), model(2), "main.ckpt", "guide.ckpt")
    with pytest.raises(
        ValueError,
        match=r"cannot guide main.ckpt: it must model the same data the same way \(sr_factor 8 vs 2\)$",
    ):
        check_guide(model(2), model(8), "main.ckpt", "guide.ckpt")
