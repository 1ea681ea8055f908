"""The latent diffusion recipes: each composes into a denoiser of its autoencoder's latent shape, and refuses in
one line, writing nothing, when autoencoder= is not given."""

from __future__ import annotations

import pytest
from conftest import compose_config

from difflab.run.latent import use_latents
from difflab.run.train import train

DATA = "data.root=/work/shared/data"


@pytest.mark.parametrize(
    ("name", "target", "latent_size"),
    [
        ("mnist_ldm_cpu", "difflab.models.UNet", 8),  # MNIST at 32 px / 4
        ("celeba64_ldm", "difflab.models.UNet", 16),
        ("cifar10_ldm_dit", "difflab.models.DiT", 8),
    ],
)
def test_a_latent_recipe_builds_its_denoiser_for_the_latents(
    autoencoder_run,
    tmp_path,
    name,
    target,
    latent_size,
) -> None:
    # data.channels=1: the toy autoencoder encodes the digits' one channel (a colour recipe's 3 are refused).
    overrides = [f"experiment={name}", f"autoencoder={autoencoder_run}", DATA, "data.channels=1"]
    cfg = compose_config("train", overrides, tmp_path)
    use_latents(cfg)
    assert cfg.model._target_ == target
    assert (cfg.model.in_channels, cfg.model.image_size) == (
        3,
        latent_size,
    )  # the toy f4 autoencoder's 3 channels
    assert cfg.data._target_ == "difflab.data.LatentDataModule" and cfg.tags == [name]


def test_the_cpu_recipe_is_digits_cpus_budget_with_a_final_score(tmp_path) -> None:
    ldm = compose_config("train", ["experiment=mnist_ldm_cpu"], tmp_path)
    cpu = compose_config("train", ["experiment=digits_cpu"], tmp_path)
    assert ldm.trainer.max_steps == cpu.trainer.max_steps and ldm.cpu_threads == cpu.cpu_threads == 1
    assert ldm.callbacks.fid.at_train_end and ldm.callbacks.fid.num_samples == cpu.callbacks.fid.num_samples


@pytest.mark.parametrize("name", ["mnist_ldm_cpu", "celeba64_ldm", "cifar10_ldm_dit"])
def test_a_latent_recipe_without_its_autoencoder_is_one_line(tmp_path, name) -> None:
    run = tmp_path / "run"
    cfg = compose_config("train", [f"experiment={name}", DATA, "trainer=cpu"], run)
    with pytest.raises(
        ValueError, match=r"^this recipe trains on an autoencoder's latents: give autoencoder="
    ) as error:
        train(cfg)
    assert "\n" not in str(error.value)
    assert not run.exists()
