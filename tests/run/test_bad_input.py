"""Bad input gets one clear line that names the problem, and nothing already written is lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import (
    CLI_FAST,
    CONF,
    FAST_TRAIN,
    compose_config,
    one_error_line,
    overwritten_in_its_middle,
    run_cli,
)
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from omegaconf import open_dict
from PIL import Image

from difflab.checkpoint import load_model
from difflab.run.sample import sample
from difflab.run.train import train
from difflab.run.train_checks import check_condition_keys


def test_unknown_config_key_is_one_line_naming_the_nearest_key():
    line = one_error_line(run_cli("train.py", "optim.lrr=1e-4"))
    assert line == "error: optim.lrr is not a key of the train config; did you mean optim.lr?"


def test_unknown_group_option_is_one_line_naming_the_nearest_option():
    line = one_error_line(run_cli("train.py", "data=mnsit"))
    assert line.startswith(
        "error: data=mnsit is not an option; did you mean data=mnist? (data: cifar10, digits"
    )


@pytest.mark.parametrize(("typed", "meant"), [("ddmi", "ddim"), ("DDIM", "ddim"), ("Heun", "heun")])
def test_a_group_option_with_swapped_letters_or_another_case_names_the_option_meant(typed, meant):
    # Before, sampler=ddmi suggested ddpm (difflib's closest), and sampler=DDIM suggested nothing.
    line = one_error_line(run_cli("sample.py", "ckpt=x", f"sampler={typed}"))
    assert line.startswith(f"error: sampler={typed} is not an option; did you mean sampler={meant}?"), line


def test_cli_prints_one_line_for_a_bad_image_size(tmp_path):
    result = run_cli("train.py", "data.image_size=18", "logger=none", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: image size 18 cannot be divided down")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("model", ["unet_small", "dit_tiny"])
def test_a_model_image_size_other_than_the_datas_is_refused_before_the_run_folder(tmp_path, model):
    # Before, model.image_size=16 on the 8x8 digits trained a net with another attention level, whose diffusers
    # export then recorded sample_size 16.
    run = tmp_path / "run"
    result = run_cli(
        "train.py", f"model={model}", "model.image_size=16", "logger=none", f"hydra.run.dir={run}"
    )
    assert one_error_line(result) == (
        "error: model.image_size=16 but data.image_size=8: the network would be built for another size than the "
        "images it trains on; drop model.image_size (it follows data.image_size) or give data.image_size=16 (the "
        "images are resized to it)"
    )
    assert not run.exists()


def test_existing_run_folder_is_refused_and_left_untouched(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"precious")
    result = run_cli("train.py", f"hydra.run.dir={run}", "logger=none")
    assert result.returncode == 2
    assert f"run folder {run} already holds a run" in result.stderr
    assert (run / "checkpoints" / "last.ckpt").read_bytes() == b"precious"
    assert not (run / ".hydra").exists()


def test_a_run_folder_without_a_checkpoint_is_refused_without_offering_a_resume(tmp_path):
    # What a run stopped before its first checkpoint (killed in its set-up, a crash) leaves: before, the line said
    # "resume with ckpt_path=last", which then failed for want of a checkpoint.
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "train.log").write_text("the earlier run's log\n")
    line = one_error_line(run_cli("train.py", f"hydra.run.dir={run}", "logger=none"))
    assert line == (
        f"error: run folder {run} already holds a run that wrote no checkpoint (.hydra): pick a new "
        "hydra.run.dir, or that run has ended: remove the folder to start over in it"
    )  # no live process holds the folder (runs.folder.training_there_now): before, "if that run has ended"
    assert (run / "train.log").read_text() == "the earlier run's log\n"


def test_sample_cli_with_missing_checkpoint(tmp_path):
    result = run_cli("sample.py", f"ckpt={tmp_path / 'nope.ckpt'}", f"hydra.run.dir={tmp_path / 's'}")
    assert result.returncode == 2
    assert f"error: checkpoint not found: {tmp_path / 'nope.ckpt'}" in result.stderr


def test_missing_data_root_is_named(tmp_path):
    cfg = compose_config(
        "train", [*FAST_TRAIN, "data=mnist", f"data.root={tmp_path / 'absent'}"], tmp_path / "run"
    )
    with pytest.raises(FileNotFoundError, match="absent"):
        train(cfg)


def test_a_mandatory_key_left_out_is_one_line_and_no_run_folder(tmp_path):
    # Before: OmegaConf's MissingMandatoryValue traceback from instantiate(cfg.data), and a run folder (.hydra,
    # train.log) that then refused the corrected command ("already holds a run that wrote no checkpoint").
    run = tmp_path / "run"
    result = run_cli("train.py", *CLI_FAST, "data=folder", f"hydra.run.dir={run}")
    assert one_error_line(result) == (
        "error: data.root must be given: add data.root=<value> to the command (the chosen config has no default)"
    )
    assert not run.exists()


def test_folder_without_images_is_named(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    cfg = compose_config(
        "train", [*FAST_TRAIN, "data=folder", f"data.root={tmp_path / 'empty'}"], tmp_path / "run"
    )
    with pytest.raises(ValueError, match="empty"):
        train(cfg)


def test_a_file_that_is_no_checkpoint_says_so(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a checkpoint")
    with pytest.raises(ValueError) as raised:
        load_model(bad)
    assert str(raised.value) == (
        f"could not read checkpoint {bad}: it is not a PyTorch checkpoint file (neither a zip archive nor a pickle)"
    )


def test_a_device_given_as_checkpoint_is_not_called_missing(tmp_path):
    # Before: "checkpoint not found: /dev/zero", which sent the user looking for a typo in a path that exists.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path in (Path("/dev/null"), fifo):
        with pytest.raises(FileNotFoundError) as raised:
            load_model(path)
        assert str(raised.value) == f"{path} is not a checkpoint file"


def test_a_checkpoints_folder_names_the_checkpoint_to_give(tiny_run):
    # Before: "… is not a difflab model folder … nor a run folder (checkpoints/last.ckpt)", with last.ckpt in it.
    folder = tiny_run / "checkpoints"
    with pytest.raises(FileNotFoundError) as raised:
        load_model(folder)
    assert str(raised.value).endswith(
        f"; it holds checkpoints: give one of them, e.g. {folder / 'last.ckpt'}, or the run folder {tiny_run}"
    )
    (folder / "last.ckpt").unlink()  # the run folder would then be refused: not offered (review report)
    with pytest.raises(FileNotFoundError) as raised:
        load_model(folder)
    assert str(raised.value).endswith(
        f"; it holds checkpoints: give one of them, e.g. {min(folder.glob('*.ckpt'))}"
    )


def test_an_npz_given_as_checkpoint_is_named_and_pointed_to_images(tmp_path):
    # Before: "the file is damaged or cut short ([enforce fail at inline_container.cc:180] )" (helper report).
    samples = tmp_path / "samples.npz"
    np.savez(samples, images=np.zeros((2, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError) as raised:
        load_model(samples)
    assert str(raised.value) == (
        f"could not read checkpoint {samples}: it is a NumPy .npz archive (images.npy), not a PyTorch checkpoint; a "
        "set of images such as sample.py's samples.npz is scored with evaluate.py images=<it>"
    )


@pytest.mark.parametrize(
    ("name", "text"),
    [("difflab_config.json", '{"model": {}}'), ("train.log", "[2026-12-04 04:00:00] training started")],
)
def test_a_json_or_log_file_given_as_checkpoint_is_not_called_a_pickle_with_objects(tmp_path, name, text):
    # Before, a file starting with { or [ was "refused: it holds Python objects ... (Unsupported operand 123)",
    # as if it were a hostile pickle.
    bad = tmp_path / name
    bad.write_text(text)
    with pytest.raises(ValueError) as raised:
        load_model(bad)
    assert str(raised.value) == (
        f"could not read checkpoint {bad}: it is not a PyTorch checkpoint file (neither a zip archive nor a pickle)"
    )


@pytest.mark.parametrize("name", ["model.safetensors", "difflab_config.json"])
def test_a_file_of_an_exported_model_folder_points_at_the_folder(tmp_path, name):
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "difflab_config.json").write_text("{}")
    with pytest.raises(ValueError) as raised:
        load_model(folder / name)
    assert (
        str(raised.value)
        == f"{folder / name} is one file of the model folder {folder}: pass the folder itself"
    )


@pytest.mark.parametrize("name", ["__0_0.distcp", "meta.pt", ".metadata"])
def test_a_file_of_a_sharded_checkpoint_points_at_the_folder(tmp_path, name):
    # Before, read as a checkpoint file: "the file is damaged or cut short", "not a Lightning checkpoint".
    folder = tmp_path / "last.ckpt"
    folder.mkdir()
    for part in ("__0_0.distcp", "meta.pt", ".metadata"):
        (folder / part).write_bytes(b"\x80\x02shard")
    with pytest.raises(ValueError) as raised:
        load_model(folder / name)
    assert str(raised.value) == (
        f"{folder / name} is one file of the sharded checkpoint {folder}: pass the folder itself"
    )


TINY_UNET = {"sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": (16, 32),
             "layers_per_block": 1, "norm_num_groups": 8}  # fmt: skip


def save_diffusers_unet(folder: Path, conditional: bool = False) -> Path:
    """What a diffusers user has: UNet2DModel(...).save_pretrained(folder) (or Stable Diffusion's
    UNet2DConditionModel), tiny; the folder."""
    diffusers = pytest.importorskip("diffusers")
    if conditional:
        blocks = {"down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                  "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D")}  # fmt: skip
        unet = diffusers.UNet2DConditionModel(
            **TINY_UNET, **blocks, cross_attention_dim=8, attention_head_dim=2
        )
    else:
        blocks = {"down_block_types": ("DownBlock2D",) * 2, "up_block_types": ("UpBlock2D",) * 2}
        unet = diffusers.UNet2DModel(**TINY_UNET, **blocks)
    unet.save_pretrained(folder)
    return folder


def test_a_diffusers_unet_folder_alone_is_named_with_the_pipeline_layout_to_put_it_in(tmp_path):
    # Before: "it is one part (UNet2DModel) of a diffusers pipeline: give the pipeline's folder, <its parent>", a
    # folder that is no pipeline (helper report).
    unet = save_diffusers_unet(tmp_path / "unet_default")
    with pytest.raises(FileNotFoundError) as raised:
        load_model(unet)  # as sample.py ckpt= and evaluate.py ckpt= read it
    assert str(raised.value) == (
        f"{unet} is not a difflab model folder (it needs difflab_config.json and model.safetensors, as export.py "
        "format=safetensors writes them) nor a run folder (checkpoints/last.ckpt); it is a diffusers UNet2DModel "
        "folder alone, with no scheduler: put it as unet/ beside a scheduler/ (a diffusers pipeline folder), or "
        f"give a difflab checkpoint; train.py init_from={unet} starts a run from its weights as it is"
    )


@pytest.mark.parametrize("index", [False, True])
def test_a_diffusers_pipeline_of_a_network_difflab_does_not_load_is_named(tmp_path, index):
    # Before: "is not a difflab model folder … nor a run folder" (without model_index.json), "holds neither a
    # UNet2DModel in unet/ nor a DiTTransformer2DModel in transformer/" (with it): what it held went unnamed.
    pipeline = tmp_path / "sd"
    save_diffusers_unet(pipeline / "unet", conditional=True)
    pytest.importorskip("diffusers").DDPMScheduler().save_pretrained(pipeline / "scheduler")
    if index:
        (pipeline / "model_index.json").write_text(
            json.dumps(
                {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}
            )
        )
    with pytest.raises((FileNotFoundError, ValueError)) as raised:
        load_model(pipeline)
    start = (
        f"diffusers folder {pipeline}: "
        if index
        else f"{pipeline} is not a difflab model folder (it needs difflab_config.json and model.safetensors, as "
        "export.py format=safetensors writes them) nor a run folder (checkpoints/last.ckpt); "
    )
    assert str(raised.value) == (
        f"{start}it is a diffusers pipeline whose unet/ holds a UNet2DConditionModel, which difflab does not load: "
        "difflab reads diffusers pipelines of its own networks (a UNet2DModel in unet/ or a DiTTransformer2DModel in "
        "transformer/, beside a scheduler/)"
    )


def test_the_unet_folder_of_a_pipeline_difflab_does_not_load_says_so_not_to_give_the_pipeline(tmp_path):
    # Before: "give the pipeline's folder", which was then refused as a network difflab does not load (review).
    pipeline = tmp_path / "sd"
    unet = save_diffusers_unet(pipeline / "unet", conditional=True)
    pytest.importorskip("diffusers").DDPMScheduler().save_pretrained(pipeline / "scheduler")
    with pytest.raises(FileNotFoundError) as raised:
        load_model(unet)
    assert str(raised.value).endswith(
        f"it is one part (UNet2DConditionModel) of a diffusers pipeline {pipeline} whose unet/ holds a "
        "UNet2DConditionModel, which difflab does not load: difflab reads diffusers pipelines of its own networks "
        "(a UNet2DModel in unet/ or a DiTTransformer2DModel in transformer/, beside a scheduler/)"
    )


@pytest.mark.parametrize("given", ["pipeline weights", "pipeline index", "lone weights", "lone config"])
def test_a_file_of_a_diffusers_folder_points_at_the_folder(tmp_path, given):
    # Before: "is not a Lightning checkpoint (no state_dict)" (the weights), "could not read checkpoint …: it is not
    # a PyTorch checkpoint file" (model_index.json, config.json), as difflab's own model.safetensors was not.
    pipeline = tmp_path / "pipe"
    save_diffusers_unet(pipeline / "unet")
    pytest.importorskip("diffusers").DDPMScheduler().save_pretrained(pipeline / "scheduler")
    (pipeline / "model_index.json").write_text(json.dumps({"_class_name": "DDPMPipeline"}))
    lone = save_diffusers_unet(tmp_path / "unet_default")
    weights = "diffusion_pytorch_model.safetensors"
    path, expected = {
        "pipeline weights": (
            pipeline / "unet" / weights,
            f"is one file of the diffusers UNet2DModel folder {pipeline / 'unet'}, part of the pipeline {pipeline}: "
            "pass the pipeline's folder",
        ),
        "pipeline index": (
            pipeline / "model_index.json",
            f"is the index of the diffusers pipeline {pipeline}: pass the pipeline's folder",
        ),
        # Before, "pass the folder itself", which sample.py then refused: it reads no lone UNet2DModel folder.
        "lone weights": (
            lone / weights,
            f"is one file of the diffusers UNet2DModel folder {lone}, alone with no scheduler: put it as unet/ "
            "beside a scheduler/ (a diffusers pipeline folder), or give a difflab checkpoint; train.py "
            f"init_from={lone} starts a run from its weights as it is",
        ),
        "lone config": (
            lone / "config.json",
            f"is one file of the diffusers UNet2DModel folder {lone}, alone with no scheduler: put it as unet/ "
            "beside a scheduler/ (a diffusers pipeline folder), or give a difflab checkpoint; train.py "
            f"init_from={lone} starts a run from its weights as it is",
        ),
    }[given]
    with pytest.raises(ValueError) as raised:
        load_model(path)
    assert str(raised.value) == f"{path} {expected}"


def test_a_damaged_checkpoint_says_so(tmp_path, tiny_ckpt):
    bad = tmp_path / "cut.ckpt"
    whole = tiny_ckpt.read_bytes()
    bad.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError) as raised:
        load_model(bad)
    assert str(raised.value).startswith(
        f"could not read checkpoint {bad}: the file is damaged or cut short ("
    )
    # torch's first sentence alone: before, also its paragraph on how files get corrupted (helper report)
    assert "miniz" not in str(raised.value) and "If you are seeing" not in str(raised.value)


def test_a_checkpoint_overwritten_in_its_middle_is_refused_not_sampled_from(tmp_path, tiny_ckpt):
    # Before, sample.py, evaluate.py and export.py loaded the changed weights without a word (torch.load does not
    # check the CRC-32s it records); only a resume checked them.
    bad = overwritten_in_its_middle(tiny_ckpt, tmp_path / "last.ckpt")
    with pytest.raises(
        ValueError, match=rf"^could not read checkpoint {bad}: the file is damaged \(.* fails its checksum\)$"
    ):
        load_model(bad)
    assert load_model(tiny_ckpt) is not None  # a whole one loads as before


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("image_size=32", r"contradicts checkpoint .*: image_size=32 \(checkpoint: 8\)"),
        ("channels=3", r"contradicts checkpoint .*: channels=3 \(checkpoint: 1\)"),
        ("prediction_type=v", r"contradicts checkpoint .*: prediction_type=v \(checkpoint: epsilon\)"),
        ("schedule=cosine", r"contradicts checkpoint .*: schedule.name=cosine \(checkpoint: linear\)"),
        ("model=unet_small", r"contradicts checkpoint .*model.base_channels=32 \(checkpoint: 16\)"),
        ("+model.base_channels=64", r"contradicts checkpoint .*: model.base_channels=64 \(checkpoint: 16\)"),
        # Before, a shared key's values (num_heads) were named as the difference, not the network's class.
        (
            "model=dit_tiny",
            r"contradicts checkpoint .*: model._target_=difflab.models.DiT \(checkpoint: difflab.models.UNet\), ",
        ),
    ],
)
def test_sample_overrides_that_contradict_the_checkpoint(tiny_ckpt, tmp_path, override, message):
    cfg = compose_config("sample", [f"ckpt={tiny_ckpt}", override, f"out={tmp_path / 'out'}"], tmp_path)
    with pytest.raises(ValueError, match=message):
        sample(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["sampler=heun", "sampler.s_tmax=abc"], "error: sampler.s_tmax='abc' is not a number"),
        (["sampler=heun", "sampler.s_noise=-1"], "error: sampler.s_noise=-1 must be at least 0.0"),
        # Following the unknown-key hint's '+sampler.eta=1' gave "Sampler.__init__() got an unexpected keyword
        # argument 'eta'" with a traceback.
        (
            ["sampler=dpm_solver", "+sampler.eta=1"],
            "error: sampler.eta is not an argument of difflab.diffusion.DPMSolverSampler;",
        ),
    ],
)
@pytest.mark.parametrize("script", ["sample.py", "evaluate.py"])
def test_a_sampler_setting_it_does_not_take_is_one_line(tiny_ckpt, tmp_path, script, overrides, message):
    out = tmp_path / "out"
    line = one_error_line(run_cli(script, f"ckpt={tiny_ckpt}", "n=2", *overrides, f"out={out}"))
    assert line.startswith(message)
    assert not out.exists()


@pytest.mark.parametrize(
    ("script", "args", "given"),
    [
        ("sample.py", ["n=2"], "out"),
        ("evaluate.py", ["n=4"], "out"),
        ("export.py", ["format=safetensors"], "out"),
        ("train.py", [*CLI_FAST, "trainer.max_steps=1"], "hydra.run.dir"),
    ],
)
def test_an_output_place_that_is_a_link_to_nothing_is_one_line(tiny_ckpt, tmp_path, script, args, given):
    # Helper report: before, "[Errno 17] File exists" (evaluate.py after its whole evaluation), and train.py's
    # "run folder … was just taken by another run".
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    checkpoint = [] if script == "train.py" else [f"ckpt={tiny_ckpt}"]
    line = one_error_line(run_cli(script, *checkpoint, *args, f"{given}={link}"))
    assert line == (
        f"error: {given}={link}: {link} is a link to {tmp_path / 'nowhere'}, which does not exist; make what it "
        f"points to, or choose another {given}="
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link"]


def test_sample_with_out_naming_a_file_says_it_is_a_file_and_keeps_it(tiny_ckpt, tmp_path):
    out = tmp_path / "grid.png"
    out.write_bytes(b"mine")
    cfg = compose_config("sample", [f"ckpt={tiny_ckpt}", "n=2", f"out={out}"], tmp_path)
    with pytest.raises(FileExistsError, match=f"^out={out} is a file, not a folder; choose another out=$"):
        sample(cfg)
    assert out.read_bytes() == b"mine"


def test_sample_refuses_a_non_empty_output_folder(tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.png").write_bytes(b"mine")
    cfg = compose_config("sample", [f"ckpt={tiny_ckpt}", "n=2", f"out={out}"], tmp_path)
    with pytest.raises(FileExistsError, match="already exists and is not empty"):
        sample(cfg)
    assert (out / "keep.png").read_bytes() == b"mine"
    with open_dict(cfg):
        cfg.out = str(tmp_path / "fresh")
    sample(cfg)
    assert (tmp_path / "fresh" / "grid.png").is_file()


def test_two_runs_given_the_same_out_at_once_do_not_write_into_each_others_folder(tiny_ckpt, tmp_path):
    """Two sample.py runs started with the same out=: before, both found it empty and wrote into it, and since a
    failed run removes what its folder holds, one run's failure would have taken the other's results with it."""
    out = tmp_path / "out"
    first = compose_config("sample", [f"ckpt={tiny_ckpt}", "n=2", "sampler.steps=1", f"out={out}"], tmp_path)
    second_finished = []

    def while_the_first_writes(*args, **kwargs):
        with pytest.raises(FileExistsError, match=f"^output folder {out} is being written by another run"):
            sample(first)  # the same out=, while the first run is inside it
        second_finished.append(True)
        return real_generate_into(*args, **kwargs)

    import difflab.run.sample as sample_run

    real_generate_into = sample_run.generate_into
    sample_run.generate_into = while_the_first_writes
    try:
        sample(first)
    finally:
        sample_run.generate_into = real_generate_into
    assert second_finished == [True]
    assert sorted(p.name for p in out.iterdir()) == ["grid.png", "images", "samples.npz", "settings.json"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.image_size=7"], "error: image size 7 cannot be divided down by the U-Net"),
        # Before, "…: 1 images x val_fraction=0.05 rounds to 0; raise data.val_fraction or add images": a larger
        # val_fraction would leave no image to train on.
        (
            ["data=folder", "data.image_size=8"],
            "error: validation split of {folder} is empty: it holds 1 image, and a run needs at least 2 (one is "
            "held out for validation): add images",
        ),
    ],
    ids=["image_size=7", "single-image folder"],
)
def test_a_run_refused_before_its_first_step_leaves_no_run_folder(tmp_path, overrides, message):
    folder = tmp_path / "one"
    folder.mkdir()
    Image.new("L", (8, 8), 128).save(folder / "a.png")
    run = tmp_path / "run"
    root = [f"data.root={folder}"] if "data=folder" in overrides else []
    result = run_cli("train.py", *FAST_TRAIN, *overrides, *root, f"hydra.run.dir={run}")
    assert one_error_line(result).startswith(message.format(folder=folder))
    assert not run.exists()


def test_a_folder_given_without_data_folder_is_refused_not_replaced_by_the_digits(tmp_path):
    # Before, `train.py data.root=<my images>` trained on the bundled digits (the default data) without a word.
    run = tmp_path / "run"
    result = run_cli("train.py", *CLI_FAST, f"data.root={tmp_path}", f"hydra.run.dir={run}")
    assert one_error_line(result) == (
        f"error: data.root={tmp_path} is not read by data=digits (scikit-learn's bundled digits need no folder): "
        "add data=folder to train on the images there"
    )
    assert not run.exists()


def test_a_refused_run_keeps_the_users_own_files_in_a_folder_they_named(tmp_path):
    run = tmp_path / "mine"
    run.mkdir()
    (run / "notes.txt").write_text("my notes")
    with pytest.raises(InstantiationException, match="image size 7 cannot be divided down"):
        train(compose_config("train", [*FAST_TRAIN, "data.image_size=7"], run))
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.sr_factor=2"], "data.sr_factor applies to data.condition=superres only, and this run has "),
        (["data.captions=templates"], "data.captions applies to data.condition=text only"),
        (
            ["data.condition=labels", "data.sr_noise=0.1"],
            "data.sr_noise applies to data.condition=superres only",
        ),
        (
            ["cond_drop_prob=0.2"],
            "cond_drop_prob applies to data.condition=labels or data.condition=text only",
        ),
    ],
    ids=["sr_factor", "captions", "sr_noise with labels", "cond_drop_prob"],
)
def test_a_conditioning_setting_for_another_conditioning_is_refused(tmp_path, overrides, message):
    # Before, taken and ignored: data.sr_factor=2 trained an unconditional model without a word.
    run = tmp_path / "run"
    line = one_error_line(run_cli("train.py", *FAST_TRAIN, *overrides, f"hydra.run.dir={run}"))
    assert line.startswith(f"error: {message}") and "drop it, or add data.condition=" in line
    assert not run.exists()


def test_a_conditioning_setting_for_the_runs_own_conditioning_is_taken():
    def typed(*overrides: str):  # composed as train.py does, with the overrides Hydra records
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose("train", overrides=list(overrides), return_hydra_config=True)

    check_condition_keys(typed("data.condition=superres", "data.sr_factor=2", "data.sr_noise=0.1"))
    check_condition_keys(typed("experiment=digits_text_cpu", "data.max_tokens=8", "cond_drop_prob=0.2"))
    # The README's one switch: model.num_classes alone makes the run class-conditional (before, refused as
    # 'this run has data.condition=null', where the same command without cond_drop_prob trained on labels).
    check_condition_keys(typed("model.num_classes=10", "cond_drop_prob=0.2"))
    with pytest.raises(
        ValueError,
        match="data.sr_factor applies to data.condition=superres only, and this run has data.condition=labels",
    ):
        check_condition_keys(typed("model.num_classes=10", "data.sr_factor=2"))
    with pytest.raises(ValueError, match="data.max_tokens applies to data.condition=text only"):
        check_condition_keys(typed("experiment=digits_cond_cpu", "data.max_tokens=8"))


def test_a_data_refusal_comes_before_a_wandb_run_starts(tmp_path):
    # Before, the W&B run started (in the cloud when logged in) and then the split was refused: an empty run.
    folder = tmp_path / "one"
    folder.mkdir()
    Image.new("L", (8, 8), 128).save(folder / "a.png")
    wandb_dir = tmp_path / "wandb_runs"
    result = run_cli(
        "train.py",
        *CLI_FAST,
        "logger=wandb",
        f"logger.wandb.save_dir={wandb_dir}",
        "data=folder",
        f"data.root={folder}",
        "data.image_size=8",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert one_error_line(result).startswith(f"error: validation split of {folder} is empty")
    assert not wandb_dir.exists() and "wandb" not in result.stdout + result.stderr


def test_sample_takes_the_model_option_the_run_chose_even_where_the_run_changed_its_values(tmp_path):
    # digits_cond_cpu sets model.num_classes=10 on unet_small_cpu; before, `sample.py model=unet_small_cpu` on its
    # checkpoint was refused as contradicting it (model.num_classes=None, checkpoint: 10).
    run = tmp_path / "run"
    trained = run_cli(
        "train.py", *CLI_FAST, "trainer.max_steps=2", "model.num_classes=10", f"hydra.run.dir={run}"
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    ckpt = run / "checkpoints" / "last.ckpt"
    sampled = run_cli(
        "sample.py", f"ckpt={ckpt}", "model=unet_tiny", "n=2", "sampler.steps=2", f"out={tmp_path / 's'}"
    )
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert len(list((tmp_path / "s" / "images").glob("*.png"))) == 2
    # A value typed one by one is still held against the checkpoint, as is another option's.
    for i, (given, named) in enumerate(
        [
            (["model=unet_tiny", "model.num_classes=null"], "model.num_classes=None (checkpoint: 10)"),
            (["model=unet_small"], "model.base_channels=32 (checkpoint: 16)"),
        ]
    ):
        out = tmp_path / f"refused{i}"
        line = one_error_line(run_cli("sample.py", f"ckpt={ckpt}", *given, "n=2", f"out={out}"))
        assert line.startswith(f"error: the config contradicts checkpoint {ckpt}: ") and named in line
        assert not out.exists()
