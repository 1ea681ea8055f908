"""The DiT recipes: digits_dit_cpu at digits_cpu's budget, cifar10_dit as DiT's own optimisation on DiT-S/2; each
composes, and trains a few steps on its data."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config
from hydra.utils import instantiate
from omegaconf import open_dict
from test_recipes import TINY, cifar10_root  # noqa: F401  (cifar10_root: a fixture, used by name)

from difflab.checkpoint import load_model
from difflab.models import DiT
from difflab.run.train import train

# TINY without the U-Net's widths, and a two-block DiT of width 32.
TINY_DIT = [o for o in TINY if not o.startswith("model.")] + [
    "model.hidden_size=32",
    "model.depth=2",
    "model.num_heads=2",
]


def recipe(name: str, tmp_path, *overrides: str):
    return compose_config("train", [f"experiment={name}", *overrides], tmp_path / "run")


def test_digits_dit_cpu_is_digits_cpu_with_the_tiny_dit(tmp_path):
    dit, unet = recipe("digits_dit_cpu", tmp_path), recipe("digits_cpu", tmp_path)
    assert dit.model._target_ == "difflab.models.DiT" and dit.model.patch_size == 2
    same = ("data", "schedule", "optim", "lr_scheduler", "metrics", "cpu_threads", "formulation", "sampler")
    for key in same:
        assert dit[key] == unet[key], key
    assert dit.trainer.max_steps == unet.trainer.max_steps == 3000
    assert dit.callbacks.fid == unet.callbacks.fid and dit.callbacks.sample_grid == unet.callbacks.sample_grid
    assert dit.tags == ["digits_dit_cpu"]


def test_cifar10_dit_is_dits_optimisation_on_dit_s2(tmp_path):
    cfg = recipe("cifar10_dit", tmp_path)
    assert cfg.data.dataset == "cifar10" and (cfg.data.image_size, cfg.data.channels) == (32, 3)
    assert (cfg.model.patch_size, cfg.model.hidden_size, cfg.model.depth, cfg.model.num_heads) == (
        2,
        384,
        12,
        6,
    )
    assert cfg.optim._target_ == "torch.optim.AdamW" and cfg.optim.lr == pytest.approx(1e-4)
    assert cfg.optim.weight_decay == 0 and not cfg.lr_scheduler  # constant learning rate
    assert cfg.data.batch_size == 256 and cfg.data.random_flip is True
    assert cfg.callbacks.ema.decay == pytest.approx(0.9999) and cfg.trainer.gradient_clip_val is None
    assert (cfg.schedule.name, cfg.schedule.timesteps, cfg.prediction_type) == ("linear", 1000, "epsilon")
    assert cfg.trainer.max_steps == 400_000 and "cifar10_dit" in cfg.tags
    with torch.device("meta"):
        assert instantiate(cfg.model).num_parameters() == pytest.approx(32.5e6, rel=0.01)


def test_cifar10_dit_is_class_conditional_by_override(tmp_path):
    cfg = recipe("cifar10_dit", tmp_path, "model.num_classes=10")
    with torch.device("meta"):
        net = instantiate(cfg.model)
    assert isinstance(net, DiT) and net.class_embed.num_embeddings == 11  # ten classes and "no label"


@pytest.mark.parametrize("cpu_recipe", ["digits_flow_cpu", "digits_cond_cpu"])
def test_a_cpu_recipe_takes_a_dit_by_model_override_alone(cpu_recipe, tmp_path):
    """`experiment=digits_flow_cpu model=dit_tiny` (make train's recipe with a transformer). Before, the recipes'
    shared U-Net width reached the DiT: 'model.base_channels is not an argument of difflab.models.DiT'."""
    run = tmp_path / "run"
    tiny = [o for o in TINY_DIT if not o.startswith(("callbacks.fid", "metrics."))] + ["callbacks=default"]
    cfg = compose_config("train", [f"experiment={cpu_recipe}", "model=dit_tiny", *tiny], run)
    assert "base_channels" not in cfg.model
    train(cfg)
    loaded = load_model(run / "checkpoints" / "last.ckpt")
    assert isinstance(loaded.net, DiT) and loaded.config["model"]["num_classes"] == cfg.model.num_classes
    assert recipe(cpu_recipe, tmp_path).model.base_channels == 16  # the recipe's own U-Net is unchanged


def test_digits_dit_cpu_trains_and_scores(tmp_path):
    run = tmp_path / "run"
    cfg = compose_config("train", ["experiment=digits_dit_cpu", *TINY_DIT], run)
    with open_dict(cfg):
        cfg.metrics.cache_dir = str(tmp_path / "fid_cache")
    metrics = train(cfg)
    assert metrics["val/loss"] > 0 and metrics["val/fd_effl0"] > 0
    loaded = load_model(run / "checkpoints" / "last.ckpt")
    assert isinstance(loaded.net, DiT) and loaded.sample_shape == (1, 8, 8)


@pytest.mark.slow  # about 30 s: 80 CIFAR-10 JPEGs extracted and scored
def test_cifar10_dit_trains_class_conditionally_on_real_cifar10(cifar10_root, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    overrides = ["experiment=cifar10_dit", *TINY_DIT, "model.num_classes=10", f"data.root={cifar10_root}"]
    cfg = compose_config("train", [*overrides, "trainer=cpu"], run)
    with open_dict(cfg):
        cfg.metrics.cache_dir = str(tmp_path / "fid_cache")
    train(cfg)
    loaded = load_model(run / "checkpoints" / "last.ckpt")
    assert loaded.sample_shape == (3, 32, 32) and loaded.net.num_classes == 10
    with torch.no_grad():
        assert loaded.net(
            torch.zeros(2, 3, 32, 32), torch.tensor([999, 999]), torch.tensor([0, 9])
        ).shape == (2, 3, 32, 32)
