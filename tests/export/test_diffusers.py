"""difflab ↔ diffusers: the exported UNet2DModel computes what difflab's U-Net computes, diffusers' DDPM/DDIM
pipelines draw the images difflab's samplers draw from the same noise, and init_from reads diffusers weights back.

Tolerances (measured on CPU, float32): network outputs agree to 2.3e-6 (asserted: 1e-5); images from 10 sampler
steps to 1.8e-6 (DDPM) and 4.2e-6 (DDIM) on the [0, 1] scale, 1.8e-5 after DDPM's 1000 steps (asserted: 1e-4). They differ at all only by float rounding: difflab forms
the timestep frequencies as -ln(10⁴)·(i/(half-1)), diffusers as (-ln(10⁴)·i)/(half-1).
"""

from __future__ import annotations

import json
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLI_FAST, FAST_TRAIN, compose_config, one_error_line, run_cli

import difflab
from difflab.diffusion import DDIMSampler, DDPMSampler, NoiseSchedule
from difflab.model_folder import hub
from difflab.model_folder.diffusers_folder import load_unet_folder, write_pipeline
from difflab.model_folder.diffusers_mapping import (
    diffusers_config,
    from_diffusers,
    to_diffusers,
    unet_arguments,
)
from difflab.models import UNet
from difflab.run.evaluate import evaluate
from difflab.run.export import export
from difflab.run.prepare import prepare
from difflab.run.sample import sample
from difflab.run.train import build_module, initialise_from, train

diffusers = pytest.importorskip("diffusers")

NO_ATTENTION = {"in_channels": 1, "base_channels": 16, "channel_mults": [1, 2], "num_res_blocks": 1,
                "attention_resolutions": [], "image_size": 8, "num_groups": 8}  # fmt: skip
TWO_HEADS = {"in_channels": 3, "base_channels": 16, "channel_mults": [1, 2, 2], "num_res_blocks": 2,
             "attention_resolutions": [4], "image_size": 8, "num_groups": 8, "num_heads": 2}  # fmt: skip
ONE_HEAD_TOP = {"in_channels": 3, "base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
                "attention_resolutions": [8], "image_size": 8, "num_groups": 4}  # fmt: skip
# DDPM's TF padding (right/bottom only) as in google/ddpm-cifar10-32's downsample_padding=0.
TF_PADDING = {**TWO_HEADS, "downsample_padding": 0}
CONFIGS = [NO_ATTENTION, TWO_HEADS, ONE_HEAD_TOP, TF_PADDING]


def random_unet(kwargs: dict, seed: int = 0) -> tuple[UNet, dict]:
    """A difflab U-Net with every weight random (the zero-initialised ones too, so no mapping hides)."""
    net = UNet(**kwargs, dropout=0.0).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return net, unet_arguments({"_target_": "difflab.models.UNet", **kwargs, "dropout": 0.0})


def inputs(kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, kwargs["in_channels"], 8, 8, generator=g), torch.tensor([0, 10, 500, 999])


@pytest.mark.parametrize(
    "kwargs", CONFIGS, ids=["no_attention", "two_heads", "one_head_at_top", "tf_padding"]
)
def test_unet2dmodel_computes_what_difflab_computes(kwargs):
    net, args = random_unet(kwargs)
    theirs = diffusers.UNet2DModel(**diffusers_config(args)).eval()
    theirs.load_state_dict(to_diffusers(net.state_dict()))  # strict: every weight has its place
    x, t = inputs(kwargs)
    with torch.no_grad():
        torch.testing.assert_close(theirs(x, t).sample, net(x, t), rtol=1e-5, atol=1e-5)
    back = from_diffusers(net.state_dict(), theirs.state_dict())
    assert all(torch.equal(back[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"cond_channels": 1}, "low-resolution image"),
        ({"text_dim": 384}, "text-conditional"),
        ({"channel_mults": [2, 2]}, "channel_mults starts with 2"),
        ({"attention_resolutions": [8, 4], "channel_mults": [1, 2, 2]}, "num_heads=2 gives heads of"),
    ],
)
def test_layouts_diffusers_cannot_express_are_refused(change, reason):
    args = unet_arguments({"_target_": "difflab.models.UNet", **TWO_HEADS, **change})
    with pytest.raises(ValueError, match=reason):
        diffusers_config(args)


def test_a_class_conditional_unet_maps_with_its_labels():
    """UNet2DModel's num_class_embeds = num_classes + 1: label num_classes is difflab's "no label" row (CFG)."""
    net, args = random_unet({**NO_ATTENTION, "num_classes": 10})
    theirs = diffusers.UNet2DModel(**diffusers_config(args)).eval()
    theirs.load_state_dict(to_diffusers(net.state_dict()))
    x, t = inputs(NO_ATTENTION)
    labels = torch.tensor([0, 3, 9, 10])  # 10: no label
    with torch.no_grad():
        torch.testing.assert_close(
            theirs(x, t, class_labels=labels).sample, net(x, t, labels), rtol=1e-5, atol=1e-5
        )
        unconditional = theirs(x, t, class_labels=torch.full((4,), 10)).sample
        torch.testing.assert_close(unconditional, net(x, t), rtol=1e-5, atol=1e-5)
    back = from_diffusers(net.state_dict(), theirs.state_dict())
    assert all(torch.equal(back[k], v) for k, v in net.state_dict().items())


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, UNet, NoiseSchedule]:
    """A DDPMPipeline folder of a random two-head U-Net on the linear schedule."""
    out = tmp_path_factory.mktemp("pipeline")
    net, args = random_unet(TWO_HEADS, seed=2)
    schedule = NoiseSchedule.from_name("linear")
    write_pipeline(net, args, schedule, "epsilon", out)
    return out, net, schedule


def as_unit(images: torch.Tensor):
    """difflab's [-1, 1] images as diffusers' pipelines return them: [0, 1], N×H×W×C numpy."""
    return (images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def test_ddpm_pipeline_draws_what_difflab_draws(exported):
    out, net, schedule = exported
    pipe = diffusers.DDPMPipeline.from_pretrained(out)
    theirs = pipe(
        batch_size=3, generator=torch.Generator().manual_seed(5), num_inference_steps=10, output_type="np"
    )
    # One generator for the batch, x_T first, then one draw per step: the order diffusers' pipeline uses.
    ours = DDPMSampler(schedule, steps=10).sample(
        net, (3, 3, 8, 8), generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(
        torch.from_numpy(theirs.images), torch.from_numpy(as_unit(ours)), rtol=0, atol=1e-4
    )


@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
def test_ddim_pipeline_draws_what_difflab_draws(exported, tmp_path, prediction_type):
    out, net, schedule = exported
    if prediction_type != "epsilon":
        out = tmp_path / "v"
        write_pipeline(
            net, unet_arguments({"_target_": "difflab.models.UNet", **TWO_HEADS}), schedule, "v", out
        )
    pipe = diffusers.DDIMPipeline.from_pretrained(out)
    # difflab re-derives ε̂ from the clipped x̂_0, as diffusers does with use_clipped_model_output=True.
    theirs = pipe(
        batch_size=3,
        generator=torch.Generator().manual_seed(6),
        num_inference_steps=10,
        eta=0.0,
        use_clipped_model_output=True,
        output_type="np",
    )
    x_T = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    ours = DDIMSampler(schedule, steps=10, prediction_type=prediction_type).sample(net, x_T.shape, x_T=x_T)
    torch.testing.assert_close(
        torch.from_numpy(theirs.images), torch.from_numpy(as_unit(ours)), rtol=0, atol=1e-4
    )


@pytest.mark.slow  # two CLI runs
def test_export_cli_writes_a_pipeline_and_never_overwrites(tiny_ckpt, tmp_path):
    out = tmp_path / "exported"
    result = run_cli("export.py", f"ckpt={tiny_ckpt}", "format=diffusers", f"out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["clip_sample"] is True and scheduler["prediction_type"] == "epsilon"
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    images = diffusers.DDIMPipeline.from_pretrained(out)(
        batch_size=2, num_inference_steps=2, output_type="np"
    )
    assert images.images.shape == (2, 8, 8, 1)
    again = run_cli("export.py", f"ckpt={tiny_ckpt}", "format=safetensors", f"out={out}")
    assert "already exists and is not empty" in one_error_line(again)


def save_unet(kwargs: dict, folder: Path, seed: int = 3) -> diffusers.UNet2DModel:
    """What a diffusers user has: UNet2DModel(...).save_pretrained(folder), here with random weights."""
    _, args = random_unet(kwargs)
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(**diffusers_config(args)).eval()
    with torch.no_grad():
        for p in unet.parameters():
            p.normal_(0, 0.2)
    unet.save_pretrained(folder)
    return unet


def test_init_from_starts_from_diffusers_weights(tmp_path):
    # unet_tiny on the digits (1×8×8): base 16, mults [1, 2], one block, no attention, 8 groups.
    theirs = save_unet(NO_ATTENTION, tmp_path / "unet")
    cfg = compose_config("train", [*FAST_TRAIN, f"init_from={tmp_path / 'unet'}"], tmp_path / "run")
    module = build_module(cfg)
    initialise_from(cfg, module, prepare(cfg, tmp_path / "run"))
    x, t = inputs(NO_ATTENTION)
    with torch.no_grad():
        torch.testing.assert_close(module.net.eval()(x, t), theirs(x, t).sample, rtol=1e-5, atol=1e-5)

    # Through train(): a step with a learning rate too small to move a weight leaves the diffusers model.
    run = tmp_path / "trained"
    train(compose_config("train", [*FAST_TRAIN, "trainer.max_steps=1", "optim.lr=1e-30",
                                   f"init_from={tmp_path / 'unet'}"], run))  # fmt: skip
    loaded = difflab.load(run / "checkpoints" / "last.ckpt")
    with torch.no_grad():
        torch.testing.assert_close(loaded.net(x, t), theirs(x, t).sample, rtol=1e-5, atol=1e-5)


def test_init_from_a_pipeline_trained_for_another_prediction_type_is_warned_of(tmp_path, caplog):
    # A pipeline's scheduler says what its U-Net predicts (before: its weights were taken without a word).
    net, args = random_unet(NO_ATTENTION)
    write_pipeline(net, args, NoiseSchedule.from_name("linear"), "v", tmp_path / "pipeline")
    cfg = compose_config("train", [*FAST_TRAIN, f"init_from={tmp_path / 'pipeline'}"], tmp_path / "run")
    with caplog.at_level("WARNING", logger="difflab"):
        prepare(cfg, tmp_path / "run")
    (said,) = [r.getMessage() for r in caplog.records if "init_from=" in r.getMessage()]
    assert said.startswith(
        f"init_from={tmp_path / 'pipeline'} was trained with other settings than this run's: "
        "prediction_type=epsilon (checkpoint: v)"
    )
    # An EDM run from a DDPM pipeline: the formulation is named too.
    caplog.clear()
    overrides = [*FAST_TRAIN, "formulation=edm", f"init_from={tmp_path / 'pipeline'}"]
    with caplog.at_level("WARNING", logger="difflab"):
        prepare(compose_config("train", overrides, tmp_path / "edm"), tmp_path / "edm")
    (said,) = [r.getMessage() for r in caplog.records if "init_from=" in r.getMessage()]
    assert "formulation._target_=difflab.diffusion.formulations.EDM (checkpoint: " in said


@pytest.mark.slow  # a CLI run
def test_init_from_a_mismatched_model_is_one_line_before_anything_is_written(tmp_path):
    save_unet(TWO_HEADS | {"in_channels": 1}, tmp_path / "other")
    run = tmp_path / "run"
    result = run_cli("train.py", "model=unet_tiny", f"init_from={tmp_path / 'other'}", f"hydra.run.dir={run}")
    line = one_error_line(result)
    assert "does not match the configured model" in line and "block_out_channels=[16, 32, 32]" in line
    assert not run.exists()


def _damaged(kind: str, weights: Path) -> None:
    """Damage a diffusers weights file the way a failed copy or a hand-edited folder does."""
    import json
    import struct

    from safetensors.torch import load_file, save_file

    raw = weights.read_bytes()
    if kind == "bad header":
        weights.write_bytes(b"\xff" * 8 + raw[8:])
    elif kind == "cut short":
        weights.write_bytes(raw[: len(raw) // 2])
    elif kind == "bad offsets":
        size = struct.unpack("<Q", raw[:8])[0]
        header = json.loads(raw[8 : 8 + size])
        first = next(k for k in header if k != "__metadata__")
        header[first]["data_offsets"] = [0, 10**9]
        text = json.dumps(header).encode()
        text += b" " * (-len(text) % 8)
        weights.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + size :])
    else:
        state = load_file(weights)
        if kind == "a tensor missing":
            state.pop("conv_in.weight")
        else:
            state["extra.weight"] = torch.zeros(3)
        save_file(state, weights)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("bad header", "cannot read diffusion_pytorch_model.safetensors, it is damaged or cut short"),
        ("cut short", "cannot read diffusion_pytorch_model.safetensors, it is damaged or cut short"),
        ("bad offsets", "cannot read diffusion_pytorch_model.safetensors, it is damaged or cut short"),
        ("a tensor missing", "the diffusers weights do not fit the difflab U-Net: 1 missing: conv_in.weight"),
        ("a tensor too many", "1 diffusers weights difflab has no place for: extra.weight"),
    ],
)
def test_init_from_damaged_or_incomplete_weights_is_refused_before_anything_is_written(
    tmp_path, kind, message
):
    """diffusers would "newly initialise" a missing tensor and the run die later with a NaN loss."""
    save_unet(NO_ATTENTION, tmp_path / "unet")
    _damaged(kind, tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    cfg = compose_config("train", [*FAST_TRAIN, f"init_from={tmp_path / 'unet'}"], tmp_path / "run")
    with pytest.raises(ValueError, match=f"^init_from={tmp_path / 'unet'}: .*{message}"):
        train(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a CLI run
def test_init_from_a_cut_short_weights_file_leaves_no_run_folder(tmp_path):
    save_unet(NO_ATTENTION, tmp_path / "unet")
    _damaged("cut short", tmp_path / "unet" / "diffusion_pytorch_model.safetensors")
    run = tmp_path / "run"
    line = one_error_line(
        run_cli("train.py", *FAST_TRAIN, f"init_from={tmp_path / 'unet'}", f"hydra.run.dir={run}")
    )
    assert "is damaged or cut short (Error while deserializing header" in line
    assert not run.exists()


def test_init_from_reads_old_diffusers_attention_names(tmp_path):
    """Files saved before diffusers renamed AttentionBlock's query/key/value/proj_attn still load."""
    from safetensors.torch import load_file, save_file

    theirs = save_unet(TWO_HEADS, tmp_path / "unet")
    weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    old = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    state = {}
    for key, value in load_file(weights).items():
        for new, former in old.items():
            if ".attentions." in key and f".{new}." in key:
                key = key.replace(f".{new}.", f".{former}.")
        state[key] = value
    save_file(state, weights)
    net, args = random_unet(TWO_HEADS)
    load_unet_folder(net, args, tmp_path / "unet")
    x, t = inputs(TWO_HEADS)
    with torch.no_grad():
        torch.testing.assert_close(net(x, t), theirs(x, t).sample, rtol=1e-5, atol=1e-5)


def test_a_class_conditional_checkpoint_exports_and_diffusers_takes_its_labels(tmp_path):
    run = tmp_path / "run"
    train(compose_config("train", [*FAST_TRAIN, "trainer.max_steps=2", "model.num_classes=10"], run))
    ckpt = run / "checkpoints" / "last.ckpt"
    out = tmp_path / "exported"
    export(compose_config("export", [f"ckpt={ckpt}", "format=diffusers", f"out={out}"], tmp_path))
    unet = diffusers.DDPMPipeline.from_pretrained(out).unet.eval()
    assert unet.config.num_class_embeds == 11
    ours = difflab.load(ckpt).net
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([5, 500, 900])
    labels = torch.tensor([1, 7, 10])
    with torch.no_grad():
        torch.testing.assert_close(
            unet(x, t, class_labels=labels).sample, ours(x, t, labels), rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("format", ["diffusers", "safetensors"])
def test_exported_files_are_as_readable_as_a_checkpoint(tiny_ckpt, tmp_path, format):
    out = tmp_path / format
    export(compose_config("export", [f"ckpt={tiny_ckpt}", f"format={format}", f"out={out}"], tmp_path))
    checkpoint_mode = stat.S_IMODE(tiny_ckpt.stat().st_mode)
    modes = {
        str(p.relative_to(out)): oct(stat.S_IMODE(p.stat().st_mode)) for p in out.rglob("*") if p.is_file()
    }
    assert modes == dict.fromkeys(modes, oct(checkpoint_mode))


def test_difflab_load_reads_its_diffusers_export_and_samples_bit_for_bit_as_the_checkpoint(
    tiny_ckpt, tmp_path
):
    """Before, difflab.load(<export.py format=diffusers folder>) said it "is not a difflab model folder"."""
    out = tmp_path / "exported"
    export(compose_config("export", [f"ckpt={tiny_ckpt}", "format=diffusers", f"out={out}"], tmp_path))
    ours, exported = difflab.load(tiny_ckpt), difflab.load(out)
    assert torch.equal(exported.schedule.betas, ours.schedule.betas)  # trained_betas: the float64 table as is
    assert exported.prediction_type == ours.prediction_type and exported.condition is None
    # Before, the export said "diffusers weights, step 0": the step and EMA of the checkpoint were lost.
    assert (exported.weights, exported.global_step) == (ours.weights, ours.global_step) == ("ema", 2)
    for sampler in ("ddim", "ddpm"):
        np.testing.assert_array_equal(
            exported.sample(4, sampler=sampler, steps=4, seed=3),
            ours.sample(4, sampler=sampler, steps=4, seed=3),
        )
    # sample.py takes the folder as ckpt= and draws the same images
    result = run_cli(
        "sample.py", f"ckpt={out}", "n=4", "sampler.steps=4", "seed=3", f"out={tmp_path / 'drawn'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    drawn = np.load(tmp_path / "drawn" / "samples.npz")
    np.testing.assert_array_equal(drawn[drawn.files[0]], ours.sample(4, steps=4, seed=3))


def test_a_diffusers_export_takes_the_options_its_model_was_trained_with(tiny_ckpt, tmp_path):
    """Before, sample.py ckpt=<export> schedule=linear model=unet_tiny (the options that trained it) was refused:
    the folder's config spells the schedule as its betas and writes out_channels: 1, and was compared key by key.
    Groups are now compared by what they build; a real difference is still named."""
    out = tmp_path / "exported"
    export(compose_config("export", [f"ckpt={tiny_ckpt}", "format=diffusers", f"out={out}"], tmp_path))
    small = [f"ckpt={out}", "n=2", "sampler.steps=2", "cpu_threads=1"]
    as_trained = sample(
        compose_config(
            "sample", [*small, "schedule=linear", "model=unet_tiny", f"out={tmp_path / 'a'}"], tmp_path
        )
    )
    plain = sample(compose_config("sample", [*small, f"out={tmp_path / 'b'}"], tmp_path))
    drawn = [np.load(folder / "samples.npz") for folder in (as_trained, plain)]
    np.testing.assert_array_equal(*(d[d.files[0]] for d in drawn))
    refusals = {
        ("schedule=cosine",): "schedule.name=cosine (checkpoint: another table of 1000 betas)",
        (
            "schedule=linear",
            "schedule.timesteps=500",
        ): "schedule.name=linear schedule.timesteps=500 (checkpoint: another",
        ("model=unet_tiny", "model.base_channels=32"): "model.base_channels=32 (checkpoint: 16); drop",
        ("model=dit_tiny",): "model._target_=difflab.models.DiT (checkpoint: difflab.models.UNet); drop",
    }
    for overrides, named in refusals.items():
        with pytest.raises(ValueError, match=re.escape(f"the config contradicts checkpoint {out}: {named}")):
            sample(compose_config("sample", [*small, *overrides, f"out={tmp_path / 'c'}"], tmp_path))
    assert not (tmp_path / "c").exists()


def test_evaluate_scores_a_diffusers_folder_against_the_data_it_is_given(tiny_ckpt, tmp_path):
    """A diffusers folder records no dataset: evaluate.py says so (before: a ConfigAttributeError traceback), and
    with data= scores it exactly as the checkpoint it was exported from."""
    out = tmp_path / "exported"
    export(compose_config("export", [f"ckpt={tiny_ckpt}", "format=diffusers", f"out={out}"], tmp_path))
    small = [
        "n=20",
        "sampler.steps=2",
        "metrics.num_reference=40",
        "metrics.kid_subset_size=10",
        "metrics.prc=false",
    ]
    small += [f"metrics.cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(ValueError, match=r"records no dataset \(a diffusers folder\): add data=<the dataset"):
        evaluate(compose_config("eval", [f"ckpt={out}", *small, f"out={tmp_path / 'a.json'}"], tmp_path))
    assert not (tmp_path / "a.json").exists()
    scores = evaluate(
        compose_config("eval", [f"ckpt={out}", "data=digits", *small, f"out={tmp_path / 'b.json'}"], tmp_path)
    )
    theirs = evaluate(
        compose_config("eval", [f"ckpt={tiny_ckpt}", *small, f"out={tmp_path / 'c.json'}"], tmp_path)
    )
    assert scores["metrics"] == theirs["metrics"] and np.isfinite(scores["metrics"]["fd_effl0"])


def test_an_exported_folder_without_its_data_folder_names_every_data_setting_to_score_it(tiny_ckpt, tmp_path):
    """A model folder keeps no data.root (a path of the training machine). Before, evaluate.py sent the user round
    a chain of refusals: data.root needed, data.root not a key, data= then needing image_size, then condition."""
    out = tmp_path / "exported"
    export(compose_config("export", [f"ckpt={tiny_ckpt}", "format=safetensors", f"out={out}"], tmp_path))
    record = json.loads((out / "difflab_config.json").read_text())
    assert "root" not in record["config"]["data"] and "cond_drop_prob" in record["config"]
    record["config"]["data"]["dataset"] = "mnist"  # as a run on MNIST, which needs its folder, exports
    (out / "difflab_config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError) as error:
        evaluate(compose_config("eval", [f"ckpt={out}", "n=4", f"out={tmp_path / 'a.json'}"], tmp_path))
    assert str(error.value) == (
        f"{out} records its dataset (mnist) but not the folder it lies in (an exported folder keeps no paths of the "
        "training machine): add data=mnist data.root=<its folder> data.image_size=8 data.channels=1"
    )
    assert not (tmp_path / "a.json").exists()


def test_a_class_conditional_diffusers_export_loads_with_its_labels(tmp_path):
    run = tmp_path / "run"
    train(compose_config("train", [*FAST_TRAIN, "trainer.max_steps=2", "model.num_classes=10"], run))
    ckpt, out = run / "checkpoints" / "last.ckpt", tmp_path / "exported"
    export(compose_config("export", [f"ckpt={ckpt}", "format=diffusers", f"out={out}"], tmp_path))
    exported = difflab.load(out)
    assert (exported.condition, exported.num_classes) == ("labels", 10)
    asked = dict(labels=[1, 7], guidance=2.0, steps=3, seed=0)
    np.testing.assert_array_equal(exported.sample(4, **asked), difflab.load(ckpt).sample(4, **asked))


def test_a_ddpm_style_diffusers_pipeline_loads_and_computes_what_diffusers_computes(tmp_path):
    """A pipeline made by diffusers itself (google/ddpm-cifar10-32's layout, its DDPMScheduler's own linear
    betas in float32, v-prediction), not by difflab's export."""
    unet = save_unet(TF_PADDING, tmp_path / "pipe" / "unet")
    scheduler = diffusers.DDPMScheduler(beta_schedule="linear", prediction_type="v_prediction")
    scheduler.save_pretrained(tmp_path / "pipe" / "scheduler")
    pipe = difflab.load(tmp_path / "pipe")
    assert pipe.prediction_type == "v"
    assert torch.equal(pipe.schedule.betas, scheduler.betas.double())
    x, t = inputs(TF_PADDING)
    with torch.no_grad():
        torch.testing.assert_close(pipe.net.float()(x, t), unet(x, t).sample, rtol=1e-5, atol=1e-5)


def test_a_zero_terminal_snr_scheduler_loads_and_sampling_settings_it_has_are_named(tmp_path):
    # Before: "betas must be a non-empty 1-D tensor with every value in (0, 1)" for rescale_betas_zero_snr, and
    # clip_sample=false or thresholding=true taken without a word (difflab's samplers clip x0 to [-1, 1]).
    from difflab.diffusion.formulations import rescale_zero_terminal_snr
    from difflab.diffusion.schedule import NoiseSchedule

    save_unet(TF_PADDING, tmp_path / "pipe" / "unet")
    diffusers.DDPMScheduler(
        beta_schedule="linear", rescale_betas_zero_snr=True, clip_sample=False, thresholding=True
    ).save_pretrained(tmp_path / "pipe" / "scheduler")
    with pytest.warns(
        UserWarning, match=r"thresholding=true .*; clip_sample=false \(give sampler.clip_x0=null"
    ):
        pipe = difflab.load(tmp_path / "pipe")
    linear = NoiseSchedule(diffusers.DDPMScheduler(beta_schedule="linear").betas.double())
    expected = rescale_zero_terminal_snr(linear).alphas_cumprod  # what difflab's zero_terminal_snr trains on
    torch.testing.assert_close(pipe.schedule.alphas_cumprod, expected, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # diffusers' own UNet2DModel defaults: [cos | sin] time features, no frequency shift
        (
            {"flip_sin_to_cos": True, "freq_shift": 0},
            "flip_sin_to_cos=True (difflab model: False), freq_shift=0",
        ),
        ({"block_out_channels": [16, 24]}, "block_out_channels=[16, 24] are not multiples of the first"),
        # Before, it loaded, and the first sampler step fed its 2-channel output back in as the next input.
        ({"out_channels": 2}, "out_channels 2 is not in_channels 1 (a U-Net that also predicts its variance"),
    ],
)
def test_a_diffusers_unet_of_another_architecture_is_refused_in_one_line(tmp_path, change, message):
    _, args = random_unet(NO_ATTENTION)
    diffusers.UNet2DModel(**{**diffusers_config(args), **change}).save_pretrained(tmp_path / "unet")
    diffusers.DDPMScheduler().save_pretrained(tmp_path / "scheduler")
    with pytest.raises(
        ValueError,
        match="^"
        + re.escape(f"diffusers folder {tmp_path}: its UNet2DModel is not difflab's U-Net: {message}"),
    ):
        difflab.load(tmp_path)


def test_weights_of_another_size_than_the_config_says_are_named_not_a_reshape_error(tmp_path):
    # A config.json edited (or another model's weights copied in): before, torch's "shape '[192, 64, 1, 1]' is
    # invalid for input of size 3072", naming no weight, and init_from= left a half-made run folder.
    _, args = random_unet(TWO_HEADS)
    diffusers.UNet2DModel(**diffusers_config(args)).save_pretrained(tmp_path / "unet")
    diffusers.DDPMScheduler().save_pretrained(tmp_path / "scheduler")
    config = tmp_path / "unet" / "config.json"
    config.write_text(
        config.read_text().replace(
            '"block_out_channels": [\n    16,\n    32,\n    32\n  ]', '"block_out_channels": [32, 64, 64]'
        )
    )
    assert "[32, 64, 64]" in config.read_text()
    with pytest.raises(
        ValueError,
        match=r"^diffusers folder .*: the diffusers weights do not fit the difflab U-Net: \d+ wrong shape",
    ):
        difflab.load(tmp_path)


def test_a_scheduler_with_betas_out_of_range_is_one_line_naming_the_folder(tmp_path):
    # Before, Hydra's two-line "Error in call to target 'difflab.diffusion.schedule.NoiseSchedule': ValueError(…)".
    _, args = random_unet(NO_ATTENTION)
    diffusers.UNet2DModel(**diffusers_config(args)).save_pretrained(tmp_path / "unet")
    diffusers.DDPMScheduler(trained_betas=[1.5] * 1000).save_pretrained(tmp_path / "scheduler")
    with pytest.raises(
        ValueError, match=rf"^diffusers folder {tmp_path}: its schedule cannot be built: betas must"
    ):
        difflab.load(tmp_path)


def test_a_diffusers_folder_without_a_scheduler_difflab_samples_as_is_refused_in_one_line(tmp_path):
    save_unet(NO_ATTENTION, tmp_path / "unet")
    with pytest.raises(
        ValueError, match=r"cannot read scheduler/scheduler_config.json .*: the noise schedule is needed"
    ):
        difflab.load(tmp_path)
    diffusers.CMStochasticIterativeScheduler().save_pretrained(tmp_path / "scheduler")
    with pytest.raises(
        ValueError, match="its scheduler CMStochasticIterativeScheduler is neither a DDPM-family"
    ):
        difflab.load(tmp_path)


def as_hub_cache(folder: Path, cache: Path, repo_id: str) -> None:
    """`folder` laid out as the Hugging Face Hub's local cache holds a fetched model (refs/main → a snapshot)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def test_a_hub_model_id_is_read_from_the_hub_cache_and_samples_as_its_checkpoint(tiny_ckpt, tmp_path):
    """sample.py ckpt=<owner/name> (no such path here) fetches the Hub pipeline: here offline, from a cache laid
    out as huggingface_hub keeps it. Before: "checkpoint not found: difflab-tests/tiny-ddpm"."""
    out = tmp_path / "exported"
    export(compose_config("export", [f"ckpt={tiny_ckpt}", "format=diffusers", f"out={out}"], tmp_path))
    as_hub_cache(out, tmp_path / "hub", "difflab-tests/tiny-ddpm")
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    args = ["n=4", "sampler.steps=4", "seed=3"]
    result = run_cli("sample.py", "ckpt=difflab-tests/tiny-ddpm", *args, f"out={tmp_path / 'drawn'}", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    drawn = np.load(tmp_path / "drawn" / "samples.npz")
    np.testing.assert_array_equal(drawn[drawn.files[0]], difflab.load(tiny_ckpt).sample(4, steps=4, seed=3))
    # a model the cache does not hold: one line saying both what was looked for and why it failed
    missing = run_cli("sample.py", "ckpt=difflab-tests/nothing", *args, f"out={tmp_path / 'none'}", env=env)
    assert one_error_line(missing).startswith(
        "error: difflab-tests/nothing is no file or folder here, and no Hugging Face Hub model of that name could "
        "be fetched: "
    )


def test_a_hub_pipeline_difflab_cannot_read_is_refused_before_its_weights_are_fetched(tmp_path, monkeypatch):
    """A latent pipeline (vae/ listed in model_index.json) is refused on its configs: only they were fetched."""
    fetched = []
    folder = tmp_path / "snapshot"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DModel"],
                                                         "vae": ["diffusers", "AutoencoderKL"]}))  # fmt: skip

    def snapshot_download(repo_id, allow_patterns):
        fetched.append(allow_patterns)
        return str(folder)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    with pytest.raises(
        ValueError, match=r"is a latent diffusion pipeline \(it names a vae/\): one is read from a local"
    ):
        difflab.load("someone/latent-pipeline")
    assert fetched == [hub.CONFIG_FILES]  # never the weights


def test_init_from_a_hub_model_id_starts_from_its_weights(tmp_path):
    """train.py init_from=<owner/name>: a bare UNet2DModel on the Hub (here offline, from the Hub's cache layout).
    Before: "init_from=difflab-tests/tiny-unet: no such folder"."""
    theirs = save_unet(NO_ATTENTION, tmp_path / "unet")
    as_hub_cache(tmp_path / "unet", tmp_path / "hub", "difflab-tests/tiny-unet")
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    run = tmp_path / "run"
    overrides = [*CLI_FAST, "trainer.max_steps=1", "optim.lr=1e-30", "init_from=difflab-tests/tiny-unet"]
    result = run_cli("train.py", *overrides, f"hydra.run.dir={run}", env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    x, t = inputs(NO_ATTENTION)
    with torch.no_grad():
        ours = difflab.load(run / "checkpoints" / "last.ckpt").net.float()(x, t)
        torch.testing.assert_close(ours, theirs(x, t).sample, rtol=1e-5, atol=1e-5)


def test_init_from_a_hub_model_of_another_architecture_is_refused_before_its_weights_are_fetched(
    tmp_path, monkeypatch
):
    _, args = random_unet(TWO_HEADS)
    diffusers.UNet2DModel(**diffusers_config(args)).save_config(tmp_path / "snapshot")
    fetched = []

    def snapshot_download(repo_id, allow_patterns):
        fetched.append(allow_patterns)
        return str(tmp_path / "snapshot")

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    cfg = compose_config("train", [*FAST_TRAIN, "init_from=someone/other-unet"], tmp_path / "run")
    with pytest.raises(ValueError, match="^init_from=someone/other-unet does not match the configured model"):
        train(cfg)
    assert fetched == [hub.CONFIG_FILES] and not (tmp_path / "run").exists()


@pytest.mark.parametrize("formats", [("safetensors", "bin"), ("bin",)], ids=["both", "bin only"])
def test_a_hub_unet_is_fetched_with_one_weights_file_safetensors_first(tmp_path, monkeypatch, formats):
    """A Hub repository often holds a model's weights twice (.bin and .safetensors): only one is downloaded,
    safetensors when there (before: both, matched by unet/*)."""
    import fnmatch

    theirs = save_unet(NO_ATTENTION, tmp_path / "repo" / "unet")  # writes the .safetensors
    if "bin" in formats:
        torch.save(theirs.state_dict(), tmp_path / "repo" / "unet" / "diffusion_pytorch_model.bin")
    if "safetensors" not in formats:
        (tmp_path / "repo" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    diffusers.DDPMScheduler().save_pretrained(tmp_path / "repo" / "scheduler")
    snapshot = tmp_path / "snapshot"

    def snapshot_download(repo_id, allow_patterns):  # as the Hub does: the matching files, into one snapshot
        for path in (tmp_path / "repo").rglob("*"):
            name = path.relative_to(tmp_path / "repo").as_posix()
            if path.is_file() and any(fnmatch.fnmatch(name, p) for p in allow_patterns):
                (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, snapshot / name)
        return str(snapshot)

    monkeypatch.setattr("huggingface_hub.snapshot_download", snapshot_download)
    pipe = difflab.load("someone/ddpm")
    fetched = sorted(p.name for p in (snapshot / "unet").iterdir())
    kept = "safetensors" if "safetensors" in formats else "bin"
    assert fetched == ["config.json", f"diffusion_pytorch_model.{kept}"]
    x, t = inputs(NO_ATTENTION)
    with torch.no_grad():
        torch.testing.assert_close(pipe.net.float()(x, t), theirs(x, t).sample, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("damaged", "message"),
    [
        ("model_index.json", r"cannot read model_index.json \("),
        (
            "scheduler/scheduler_config.json",
            r"cannot read scheduler/scheduler_config.json \(.*the noise schedule",
        ),
    ],
)
def test_a_diffusers_folder_with_a_damaged_config_is_one_line_naming_the_file(
    exported, tmp_path, damaged, message
):
    """Before, a damaged model_index.json gave json's bare 'Expecting property name …' naming no file."""
    folder = tmp_path / "copy"
    shutil.copytree(exported[0], folder)
    (folder / damaged).write_text("{cut short")
    with pytest.raises(ValueError, match=f"^diffusers folder {folder}: {message}") as error:
        difflab.load(folder)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("entry", ["difflab.load", "sample.py"])
def test_a_damaged_unet_config_is_named_not_taken_for_another_kind_of_folder(exported, tmp_path, entry):
    """Before: 'holds neither a UNet2DModel in unet/ nor …' (with model_index.json), or 'is not a difflab model
    folder … nor a run folder' (without): the file that was damaged went unnamed."""
    folder = tmp_path / "copy"
    shutil.copytree(exported[0], folder)
    config = folder / "unet" / "config.json"
    config.write_text(config.read_text()[:40])
    if entry == "sample.py":
        (folder / "model_index.json").unlink()
        line = one_error_line(run_cli("sample.py", f"ckpt={folder}", f"out={tmp_path / 'out'}"))
    else:
        with pytest.raises(ValueError) as error:
            difflab.load(folder)
        line = str(error.value)
    assert f"{config} cannot be read as a diffusers config (" in line and "\n" not in line
    assert not (tmp_path / "out").exists()


def test_an_empty_out_is_one_line_not_the_default_folder(tiny_ckpt, tmp_path):
    """`out=` with its value forgotten: before, written to a new outputs/export/<date>/<time> of the project."""
    cfg = compose_config("export", [f"ckpt={tiny_ckpt}", "out=", f"paths.root_dir={tmp_path}"], tmp_path)
    with pytest.raises(
        ValueError, match=r"^out= is empty: give a folder, or leave out= off for a new outputs/export/"
    ):
        export(cfg)
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("given_empty_out", [False, True])
def test_an_export_that_fails_midway_leaves_no_half_folder(tiny_ckpt, tmp_path, monkeypatch, given_empty_out):
    """A full disk after the weights were written: before, out/ kept unet/ without model_index.json, a folder
    that neither difflab.load nor diffusers can read. Now what the export wrote is removed (an out= that existed,
    empty, is left empty)."""
    from difflab.io.atomic import NoSpaceLeft
    from difflab.run import export as export_run

    real_write = export_run.write_export

    def fills_the_disk_after_the_weights(loaded, plan, out):
        real_write(loaded, plan, out)
        raise NoSpaceLeft(out / "model_index.json")

    monkeypatch.setattr(export_run, "write_export", fills_the_disk_after_the_weights)
    out = tmp_path / "exported"
    if given_empty_out:
        out.mkdir()
    cfg = compose_config("export", [f"ckpt={tiny_ckpt}", f"out={out}"], tmp_path)
    with pytest.raises(NoSpaceLeft):
        export_run.export(cfg)
    assert (list(out.iterdir()) == []) if given_empty_out else not out.exists()
