"""export.py format=diffusers for a DiT checkpoint: a DiTPipeline folder whose transformer computes what
difflab's DiT computes, and one-line refusals, before any folder is made, where DiTTransformer2DModel has no
counterpart (text, super-resolution, a formulation without a DDPMScheduler)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_TRAIN, compose_config
from safetensors.torch import load_file, save_file

import difflab
from difflab.model_folder.dit_mapping import diffusers_dit_config, dit_arguments
from difflab.run.export import export
from difflab.run.train import train

diffusers = pytest.importorskip("diffusers")

# Enough training that every zero-initialised gate has moved, so the comparison sees every path.
MOVED = ["trainer.max_steps=3", "optim.lr=1e-2", "callbacks.ema.decay=0.0"]


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def trained(tmp_path: Path, *overrides: str) -> Path:
    run = tmp_path / "run"
    train(compose_config("train", [*FAST_TRAIN, "model=dit_tiny", *MOVED, *overrides], run))
    return run / "checkpoints" / "last.ckpt"


def export_to(ckpt: Path, out: Path) -> Path:
    return export(compose_config("export", [f"ckpt={ckpt}", "format=diffusers", f"out={out}"], out.parent))


def test_class_conditional_dit_exports_as_a_ditpipeline_computing_the_same(tmp_path):
    ckpt = trained(tmp_path, "model.num_classes=10")
    out = export_to(ckpt, tmp_path / "exported")
    transformer = diffusers.DiTTransformer2DModel.from_pretrained(out / "transformer").eval()
    pipe = difflab.load(ckpt)
    x, t, labels = torch.randn(3, 1, 8, 8), torch.tensor([0, 500, 999]), torch.tensor([2, 7, 10])
    with torch.no_grad():
        ours = pipe.net(x, t, labels)
        theirs = transformer(x, t, class_labels=labels).sample
    assert ours.abs().mean() > 1e-3  # trained: not the all-zero output of an untrained DiT
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    loaded = diffusers.DiTPipeline.from_pretrained(out, vae=None)
    assert torch.equal(loaded.scheduler.betas, pipe.schedule.betas.float())
    assert loaded.scheduler.config.prediction_type == "epsilon"


def test_unconditional_dit_maps_to_a_one_class_table_of_zeros(tmp_path, caplog):
    ckpt = trained(tmp_path)
    verbosity = diffusers.utils.logging.get_verbosity()
    logged = ListHandler()
    logging.getLogger("diffusers").addHandler(logged)  # diffusers' loggers do not propagate to the root
    try:
        with caplog.at_level(logging.INFO, logger="difflab"):
            out = export_to(ckpt, tmp_path / "exported")
    finally:
        logging.getLogger("diffusers").removeHandler(logged)
    # Before, the line said nothing of the labels, and a transformer called without them fails in diffusers.
    assert "its transformer (class_labels=0 for every image: one class) and scheduler" in caplog.text
    # diffusers logged "self.vae=None of type <class 'NoneType'> cannot be saved." on this rightly VAE-less folder.
    assert not [m for m in logged.messages if "cannot be saved" in m]
    assert diffusers.utils.logging.get_verbosity() == verbosity  # given back as it was
    transformer = diffusers.DiTTransformer2DModel.from_pretrained(out / "transformer").eval()
    pipe = difflab.load(tmp_path / "run" / "checkpoints" / "last.ckpt")
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 900])
    with torch.no_grad():
        torch.testing.assert_close(
            transformer(x, t, class_labels=torch.zeros(2, dtype=torch.long)).sample,
            pipe.net(x, t),
            rtol=1e-4,
            atol=1e-5,
        )


def test_an_edm_dit_is_refused_in_one_line_before_any_folder(tmp_path):
    ckpt = trained(tmp_path, "formulation=edm")
    out = tmp_path / "exported"
    with pytest.raises(ValueError, match=r"cannot export .* a formulation=edm model has no DDPMScheduler"):
        export_to(ckpt, out)
    assert not out.exists()


def test_a_super_resolution_dit_is_refused_in_one_line_before_any_folder(tmp_path):
    ckpt = trained(tmp_path, "data.condition=superres")
    out = tmp_path / "exported"
    with pytest.raises(
        ValueError, match="super-resolution.* has no DiTTransformer2DModel counterpart"
    ) as error:
        export_to(ckpt, out)
    assert "\n" not in str(error.value) and not out.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"text_dim": 384},
            "a text-conditional DiT .cross-attention. has no DiTTransformer2DModel counterpart",
        ),
        ({"pos_embed": "learned"}, "a learned position embedding has no DiTTransformer2DModel counterpart"),
        ({"mlp_ratio": 2.0}, "mlp_ratio 2.0: DiTTransformer2DModel's MLP is 4× wide"),
    ],
)
def test_what_ditransformer2dmodel_cannot_express_is_named(change, message):
    args = dit_arguments({"_target_": "difflab.models.DiT", "in_channels": 1, "image_size": 8, **change})
    with pytest.raises(ValueError, match=message):
        diffusers_dit_config(args)


@pytest.mark.parametrize("labels", [None, [2, 7]], ids=["unconditional", "class-conditional"])
def test_difflab_load_reads_the_ditpipeline_back_and_samples_bit_for_bit_as_the_checkpoint(tmp_path, labels):
    """Before, difflab.load(<the DiTPipeline folder>) said it "is not a difflab model folder"."""
    ckpt = trained(tmp_path, *([] if labels is None else ["model.num_classes=10"]))
    out = export_to(ckpt, tmp_path / "exported")
    ours, back = difflab.load(ckpt), difflab.load(out)
    assert (back.condition, back.num_classes) == (ours.condition, ours.num_classes)
    asked = dict(steps=3, seed=2) if labels is None else dict(labels=labels, guidance=2.0, steps=3, seed=2)
    np.testing.assert_array_equal(back.sample(4, **asked), ours.sample(4, **asked))


def test_a_ditpipeline_whose_blocks_embed_time_apart_is_refused_in_one_line(tmp_path):
    out = export_to(trained(tmp_path), tmp_path / "exported")
    weights = out / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    state["transformer_blocks.1.norm1.emb.timestep_embedder.linear_2.bias"] += 1.0
    save_file(state, weights)
    with pytest.raises(ValueError, match="block 1 embeds time and class otherwise than block 0"):
        difflab.load(out)
