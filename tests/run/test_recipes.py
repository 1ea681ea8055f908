"""Experiment recipes: each pins the values its paper uses, and each trains on its real data (shrunk) on a CPU."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
import torch
from conftest import compose_config, shared_data_or_skip
from hydra.utils import instantiate
from omegaconf import open_dict
from PIL import Image

from difflab.checkpoint import load_model
from difflab.run.train import train

# A few CPU steps of each recipe's structure: every level and attention block kept, widths cut to 8 channels,
# batches of 2, validation cut to 2 batches, a checkpoint and a 2-image grid at every step.
TINY = [
    "trainer=cpu",
    "logger=csv",
    "model.base_channels=8",
    "model.num_groups=4",
    "data.batch_size=2",
    "data.num_workers=0",
    "data.persistent_workers=false",
    "data.pin_memory=false",
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "+trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "sampler.steps=2",
    "callbacks.sample_grid.every_n_steps=2",
    "callbacks.sample_grid.num_samples=2",
    "callbacks.model_checkpoint.every_n_train_steps=1",
    # The recipes score samples during training; here with the offline extractor on a handful of images.
    "metrics.extractor=efficientnet_lite0",
    "metrics.num_reference=8",
    "metrics.kid_subset_size=4",
    "callbacks.fid.num_samples=4",
    "callbacks.fid.every_n_steps=2",
    "callbacks.fid.batch_size=4",
]


def extract(archive: Path, dest: Path, wanted) -> int:
    """Extract the members of a tar archive for which wanted(member) is true (a streaming scan)."""
    count = 0
    with tarfile.open(archive) as tar:
        for member in tar:
            if member.isfile() and wanted(member):
                tar.extract(member, dest, filter="data")
                count += 1
    return count


@pytest.fixture(scope="session")
def cifar10_root(tmp_path_factory) -> Path:
    """train/<class>/ and test/<class>/ with the first 4 JPEGs of each class of each split (80 files)."""
    archive = shared_data_or_skip() / "cifar10-jpg.tar.gz"
    root = tmp_path_factory.mktemp("data") / "cifar10"
    taken: dict[tuple[str, str], int] = {}

    def wanted(member: tarfile.TarInfo) -> bool:
        parts = member.name.split("/")
        if len(parts) != 3 or parts[0] not in ("train", "test"):
            return False
        key = (parts[0], parts[1])
        taken[key] = taken.get(key, 0) + 1
        return taken[key] <= 4

    assert extract(archive, root, wanted) == 80
    return root


@pytest.fixture(scope="session")
def celeba64_root(tmp_path_factory) -> Path:
    """celeba64/ with the first 24 faces of the archive."""
    archive = shared_data_or_skip() / "celeba64-10k.tar"
    dest = tmp_path_factory.mktemp("data")
    names: list[str] = []

    def wanted(member: tarfile.TarInfo) -> bool:
        if len(names) < 24 and member.name.startswith("celeba64/") and member.name.endswith(".jpg"):
            names.append(member.name)
            return True
        return False

    assert extract(archive, dest, wanted) == 24
    return dest / "celeba64"


def recipe_values(name: str, tmp_path: Path):
    return compose_config("train", [f"experiment={name}"], tmp_path / "run")


def parameters(model_cfg) -> int:
    return sum(p.numel() for p in instantiate(model_cfg).parameters())


def test_cifar10_ddpm_is_the_papers_setup(tmp_path):
    cfg = recipe_values("cifar10_ddpm", tmp_path)
    assert cfg.data.dataset == "cifar10" and cfg.data.root.endswith("/cifar10")
    assert (cfg.data.image_size, cfg.data.channels) == (32, 3)
    assert cfg.data.batch_size == 128 and cfg.data.random_flip is True
    assert cfg.optim._target_ == "torch.optim.Adam" and cfg.optim.lr == pytest.approx(2e-4)
    assert (
        cfg.lr_scheduler._target_ == "difflab.training.linear_warmup"
        and cfg.lr_scheduler.warmup_steps == 5000
    )
    assert cfg.callbacks.ema.decay == pytest.approx(0.9999)
    assert cfg.model.dropout == pytest.approx(0.1)
    assert (cfg.schedule.name, cfg.schedule.timesteps) == ("linear", 1000)
    assert cfg.trainer.max_steps == 800_000 and cfg.trainer.gradient_clip_val == 1.0
    assert cfg.trainer.accelerator == "gpu"
    # FID during training, against the training images as the paper reports it.
    assert cfg.metrics.extractor == "inception" and cfg.metrics.reference_split == "train"
    assert cfg.callbacks.fid.every_n_steps == 50_000
    assert "cifar10_ddpm" in cfg.tags
    assert parameters(cfg.model) == 35_746_307  # the paper's 35.7M


def test_cifar10_edm_is_the_edm_papers_cifar10_training_on_the_ddpm_unet(tmp_path):
    cfg = recipe_values("cifar10_edm", tmp_path)
    assert cfg.formulation._target_ == "difflab.diffusion.formulations.EDM"
    assert (cfg.formulation.sigma_data, cfg.formulation.p_mean, cfg.formulation.p_std) == (0.5, -1.2, 1.2)
    assert cfg.formulation.weighting == "edm"
    assert cfg.data.batch_size == 512 and cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.lr_scheduler.warmup_steps * 512 == pytest.approx(10e6, rel=1e-4)  # EDM's 10M-image ramp
    assert cfg.trainer.max_steps * 512 == 200_000_000 and cfg.trainer.gradient_clip_val is None
    assert pytest.approx(cfg.callbacks.ema.decay, abs=1e-5) == 0.5 ** (
        1 / (0.5e6 / 512)
    )  # half-life 0.5M images
    assert cfg.model.dropout == pytest.approx(0.13)
    assert cfg.sampler._target_ == "difflab.diffusion.HeunSampler" and cfg.sampler.steps == 18  # NFE 35
    assert cfg.callbacks.fid.sampler.steps == 18
    assert "cifar10_edm" in cfg.tags


def test_cifar10_flow_is_flow_matching_with_the_ddpm_optimisation(tmp_path):
    cfg = recipe_values("cifar10_flow", tmp_path)
    ddpm = recipe_values("cifar10_ddpm", tmp_path / "ddpm")
    assert cfg.formulation._target_ == "difflab.diffusion.formulations.Flow"
    assert cfg.formulation.t_sampling == "logit_normal"
    assert (cfg.optim, cfg.lr_scheduler, cfg.data.batch_size) == (ddpm.optim, ddpm.lr_scheduler, 128)
    assert cfg.sampler._target_ == "difflab.diffusion.EulerSampler" and cfg.sampler.steps == 50
    assert cfg.trainer.max_steps == 400_000 and "cifar10_flow" in cfg.tags


def test_celeba64_ddpm_uses_the_64px_unet_and_the_ddpm_optimisation(tmp_path):
    cfg = recipe_values("celeba64_ddpm", tmp_path)
    assert cfg.data.dataset == "folder" and cfg.data.root.endswith("/celeba64")
    assert (cfg.data.image_size, cfg.data.channels, cfg.data.random_flip) == (64, 3, True)
    assert list(cfg.model.channel_mults) == [1, 2, 2, 2, 4] and list(cfg.model.attention_resolutions) == [16]
    assert cfg.model.dropout == pytest.approx(0.1)
    assert cfg.data.batch_size == 128 and cfg.optim.lr == pytest.approx(2e-4)
    assert cfg.lr_scheduler.warmup_steps == 5000 and cfg.callbacks.ema.decay == pytest.approx(0.9999)
    assert "celeba64_ddpm" in cfg.tags
    assert parameters(cfg.model) == 78_700_803  # DDIM's CelebA model


def test_mnist_ddpm_is_a_small_single_gpu_recipe(tmp_path):
    cfg = recipe_values("mnist_ddpm", tmp_path)
    assert cfg.data.dataset == "mnist" and (cfg.data.image_size, cfg.data.channels) == (32, 1)
    assert cfg.data.random_flip is False and cfg.trainer.devices == 1
    assert "mnist_ddpm" in cfg.tags
    assert parameters(cfg.model) == 6_469_889


@pytest.mark.parametrize(
    ("recipe", "shape"),
    [("cifar10_ddpm", (3, 32, 32)), ("celeba64_ddpm", (3, 64, 64)), ("mnist_ddpm", (1, 32, 32))],
)
def test_recipe_trains_on_its_real_data(recipe, shape, tmp_path, request):
    if recipe == "cifar10_ddpm":
        root = request.getfixturevalue("cifar10_root")
    elif recipe == "celeba64_ddpm":
        root = request.getfixturevalue("celeba64_root")
    else:
        root = shared_data_or_skip()
    run = tmp_path / "run"
    cfg = compose_config("train", [f"experiment={recipe}", *TINY, f"data.root={root}"], run)
    with open_dict(cfg):
        cfg.metrics.cache_dir = str(tmp_path / "fid_cache")
    metrics = train(cfg)
    assert metrics["val/loss"] > 0 and metrics["val/fd_effl0"] > 0
    checkpoints = run / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == [
        "best.ckpt",
        "last.ckpt",
        "step_0000001.ckpt",
        "step_0000002.ckpt",
    ]
    loaded = load_model(checkpoints / "last.ckpt")
    assert loaded.global_step == 2 and loaded.weights == "ema"
    assert loaded.sample_shape == shape
    with torch.no_grad():
        assert loaded.net(torch.zeros(1, *shape), torch.tensor([999])).shape == (1, *shape)
    assert recipe in loaded.config["tags"]
    assert (run / "samples" / "final.png").is_file()


# Super-resolution recipes: no FID callback (it samples unconditionally), so none of its overrides.
TINY_SR = [o for o in TINY if not o.startswith(("metrics.", "callbacks.fid"))]


@pytest.mark.parametrize(
    ("recipe", "size", "low", "channels"),
    [("mnist_sr_cpu", 28, 7, 1), ("cifar10_sr3", 32, 8, 3), ("celeba64_sr3", 64, 16, 3)],
)
def test_superres_recipes_pin_their_resolutions(recipe, size, low, channels, tmp_path):
    cfg = recipe_values(recipe, tmp_path)
    assert cfg.data.condition == "superres" and cfg.data.sr_noise == 0.0
    assert (cfg.data.image_size, cfg.data.image_size // cfg.data.sr_factor, cfg.data.channels) == (
        size,
        low,
        channels,
    )
    assert "fid" not in cfg.callbacks and recipe in cfg.tags
    if recipe == "mnist_sr_cpu":
        assert cfg.cpu_threads == 1 and cfg.trainer.accelerator == "cpu"
        assert cfg.sampler.eta == 1.0  # its grids sample stochastically: deterministic DDIM leaves speckle
    else:
        assert cfg.trainer.accelerator == "gpu" and cfg.data.random_flip is True


@pytest.mark.parametrize(
    ("recipe", "shape"),
    [("cifar10_sr3", (3, 32, 32)), ("celeba64_sr3", (3, 64, 64)), ("mnist_sr_cpu", (1, 28, 28))],
)
def test_superres_recipe_trains_on_its_real_data(recipe, shape, tmp_path, request):
    if recipe == "cifar10_sr3":
        root = request.getfixturevalue("cifar10_root")
    elif recipe == "celeba64_sr3":
        root = request.getfixturevalue("celeba64_root")
    else:
        root = shared_data_or_skip()
    run = tmp_path / "run"
    metrics = train(compose_config("train", [f"experiment={recipe}", *TINY_SR, f"data.root={root}"], run))
    assert metrics["val/loss"] > 0
    loaded = load_model(run / "checkpoints" / "last.ckpt")
    assert loaded.condition == "superres" and loaded.sample_shape == shape
    assert loaded.config["model"]["cond_channels"] == shape[0]
    with torch.no_grad():
        x = torch.zeros(1, *shape)
        assert loaded.net(x, torch.tensor([999]), {"low_res": x}).shape == (1, *shape)
    assert (run / "samples" / "final.png").is_file()


def test_cifar10_cond_ddpm_is_the_ddpm_recipe_with_labels_and_guidance(tmp_path):
    cond, plain = recipe_values("cifar10_cond_ddpm", tmp_path), recipe_values("cifar10_ddpm", tmp_path)
    assert (cond.data.condition, cond.model.num_classes, cond.cond_drop_prob) == ("labels", 10, 0.1)
    assert cond.callbacks.sample_grid.num_samples == 100 and cond.callbacks.sample_grid.guidance == 3.0
    assert cond.callbacks.fid.guidance == 1.3 and list(cond.tags) == ["cifar10_cond_ddpm"]
    for group in ("optim", "lr_scheduler", "schedule", "trainer", "metrics"):
        assert cond[group] == plain[group]
    # The paper's U-Net plus a (10 + 1) x 512 label embedding (one row for "no label").
    assert parameters(cond.model) == 35_746_307 + 11 * 512


def test_cifar10_cond_ddpm_trains_class_conditionally_on_real_cifar10(cifar10_root, tmp_path):
    run = tmp_path / "run"
    overrides = ["experiment=cifar10_cond_ddpm", *TINY, f"data.root={cifar10_root}"]
    overrides += ["callbacks.sample_grid.num_samples=10", "metrics.classifier_train_images=20"]
    cfg = compose_config("train", overrides, run)
    with open_dict(cfg):
        cfg.metrics.cache_dir = str(tmp_path / "fid_cache")
    metrics = train(cfg)
    assert metrics["val/fd_effl0"] > 0 and 0 <= metrics["val/cond_accuracy"] <= 1
    loaded = load_model(run / "checkpoints" / "last.ckpt")
    assert (loaded.condition, loaded.num_classes, loaded.global_step) == ("labels", 10, 2)
    with torch.no_grad():
        out = loaded.net(torch.zeros(2, 3, 32, 32), torch.tensor([999, 0]), {"labels": torch.tensor([0, 9])})
    assert out.shape == (2, 3, 32, 32)
    # One row per class: ten 32-px tiles high, one wide (2-px padding), enlarged 7x to be at least 256 px wide.
    assert Image.open(run / "samples" / "final.png").size == (7 * 36, 7 * (2 + 10 * 34))


def test_digits_cond_cpu_is_a_class_conditional_digits_cpu(tmp_path):
    cfg = recipe_values("digits_cond_cpu", tmp_path)
    assert (cfg.data.dataset, cfg.data.condition, cfg.model.num_classes) == ("digits", "labels", 10)
    assert cfg.cpu_threads == 1
    assert cfg.callbacks.sample_grid.num_samples % 10 == 0 and cfg.callbacks.sample_grid.guidance > 1
    assert cfg.callbacks.fid.at_train_end and cfg.callbacks.fid.every_n_steps == 0
