"""Class-conditional generation end to end through Hydra: train on every labelled source, sample with
labels= and guidance=, edit towards a class, evaluate conditioning accuracy."""

from __future__ import annotations

import csv
import json
import logging
import re
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    CLI_FAST,
    FAST_TRAIN,
    compose_config,
    evaluate_first_batch,
    one_error_line,
    run_cli,
    shared_data_or_skip,
)
from omegaconf import OmegaConf
from PIL import Image

import difflab
from difflab.checkpoint import CONFIG_KEY, load_model
from difflab.data import DataError, ImageDataModule
from difflab.data.folder import class_folder_changes
from difflab.evaluation.samples import scored_conditions
from difflab.generation.requested import requested_labels
from difflab.models import UNet
from difflab.run.evaluate import evaluate
from difflab.run.sample import sample
from difflab.run.train import train
from difflab.sample_options import SampleOptions
from difflab.training.finite import NonFiniteError

# Lite0 at 224 px on a CPU costs ~0.1 s an image: a handful of reference, training and generated images.
SMALL_METRICS = [
    "metrics.num_reference=40",
    "metrics.kid_subset_size=5",
    "metrics.kid_subsets=5",
    "metrics.prc=false",
    "metrics.classifier_train_images=60",
]


def grid_size(rows: int, cols: int, tile: int = 8) -> tuple[int, int]:
    """Pixel size of a grid PNG: tiles with 2-pixel padding, enlarged by an integer factor to ≥ 256 px wide."""
    width, height = 2 + cols * (tile + 2), 2 + rows * (tile + 2)
    factor = max(1, 256 // width)
    return factor * width, factor * height


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory) -> dict:
    """Two steps of a class-conditional digits model (model.num_classes=10) with a 20-sample grid at guidance 2."""
    run = tmp_path_factory.mktemp("cond") / "run"
    overrides = [*FAST_TRAIN, "model.num_classes=10", "trainer.max_steps=2"]
    overrides += ["callbacks.sample_grid.num_samples=20", "callbacks.sample_grid.guidance=2"]
    train(compose_config("train", overrides, run))
    return {"run": run, "ckpt": run / "checkpoints" / "last.ckpt"}


def test_training_grid_shows_a_row_per_class(cond_run):
    assert Image.open(cond_run["run"] / "samples" / "final.png").size == grid_size(rows=10, cols=2)
    loaded = load_model(cond_run["ckpt"])
    assert (loaded.condition, loaded.num_classes) == ("labels", 10)


@pytest.mark.slow  # Lite0 features of ~200 images: about 20 s on an idle 2-core CPU
def test_fid_callback_and_evaluate_report_conditioning_accuracy(tmp_path):
    cache = f"metrics.cache_dir={tmp_path / 'cache'}"
    overrides = [*FAST_TRAIN, "model.num_classes=10", "trainer.max_steps=2", "callbacks=[default,fid]"]
    overrides += ["callbacks.fid.every_n_steps=0", "callbacks.fid.num_samples=10", "callbacks.fid.guidance=2"]
    overrides += ["callbacks.fid.best_checkpoint=null", *SMALL_METRICS, cache]
    metrics = train(compose_config("train", overrides, tmp_path / "run"))
    assert 0.0 <= metrics["val/cond_accuracy"] <= 1.0
    (log,) = (tmp_path / "run").rglob("metrics.csv")
    assert [r["val/cond_accuracy"] for r in csv.DictReader(log.open()) if r.get("val/cond_accuracy")]

    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    overrides = [f"ckpt={ckpt}", "n=10", "guidance=2", "sampler.steps=2", f"out={tmp_path / 'r.json'}"]
    report = evaluate(compose_config("eval", [*overrides, *SMALL_METRICS, cache], tmp_path))
    metrics = report["metrics"]
    assert 0.0 <= metrics["cond_accuracy"] <= 1.0 and "fd_effl0" in metrics
    # Fitted on 60 real training digits during training (read back from the cache), scored on the 90 held out.
    assert metrics["classifier_accuracy"] > 0.5
    conditioning = report["conditioning"]
    assert conditioning["classifier"] == {
        "heldout_accuracy": metrics["classifier_accuracy"],
        "train_images": 60,
        "heldout_images": 90,
    }
    assert sorted(int(c) for c in conditioning["per_class_accuracy"]) == list(range(10))  # n=10: one each
    assert report["generated"]["guidance"] == 2.0 and report["generated"]["condition"] == "labels"


def sample_to(out: Path, ckpt: Path, *overrides: str) -> dict:
    sample(
        compose_config("sample", [f"ckpt={ckpt}", "sampler.steps=3", f"out={out}", *overrides], out.parent)
    )
    return json.loads((out / "settings.json").read_text())


def test_sample_py_spreads_n_over_the_labels_with_a_row_per_label(cond_run, tmp_path, monkeypatch):
    settings = sample_to(tmp_path / "a", cond_run["ckpt"], "labels=[3,7]", "guidance=2", "n=6")
    assert settings["labels"] == [3, 3, 3, 7, 7, 7] and settings["guidance"] == 2.0
    assert len(list((tmp_path / "a" / "images").glob("*.png"))) == 6
    assert np.load(tmp_path / "a" / "samples.npz")["images"].shape == (6, 8, 8, 1)
    assert Image.open(tmp_path / "a" / "grid.png").size == grid_size(rows=2, cols=3)
    # Every model call sees each sample's label twice: kept (conditional) and dropped (unconditional half).
    seen = []
    forward = UNet.forward

    def spy(net, x, t, cond=None):
        seen.append((cond["labels"].tolist(), cond["drop"].tolist()))
        return forward(net, x, t, cond)

    monkeypatch.setattr(UNet, "forward", spy)
    sample_to(tmp_path / "b", cond_run["ckpt"], "labels=[7,3]", "guidance=2", "n=4", "sampler.steps=2")
    assert seen == [([7, 7, 3, 3] * 2, [True] * 4 + [False] * 4)] * 2
    # No labels: every class, one row each.
    settings = sample_to(tmp_path / "c", cond_run["ckpt"], "n=10")
    assert settings["labels"] == list(range(10))
    assert Image.open(tmp_path / "c" / "grid.png").size == grid_size(rows=10, cols=1)


def test_img2img_and_inpaint_edit_towards_the_labels(cond_run, tmp_path):
    picture = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "pic.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[4:] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    image = f"image={tmp_path / 'pic.png'}"

    settings = sample_to(
        tmp_path / "i2i", cond_run["ckpt"], "mode=img2img", image, "labels=[3,7]", "guidance=2", "n=4"
    )
    assert settings["labels"] == [3, 3, 7, 7] and settings["guidance"] == 2.0
    assert settings["order"] == (
        "result k is an edit of input k // n towards the condition of sample k % n (the conditions spread over n "
        "in equal blocks)"
    )
    assert np.load(tmp_path / "i2i" / "samples.npz")["images"].shape == (4, 8, 8, 1)

    inpaint = [
        "mode=inpaint",
        image,
        f"mask={tmp_path / 'mask.png'}",
        "inpaint.steps=4",
        "inpaint.jump_n_sample=1",
    ]
    settings = sample_to(tmp_path / "inp", cond_run["ckpt"], *inpaint, "labels=5", "guidance=3", "n=2")
    assert settings["labels"] == [5, 5]
    results = np.load(tmp_path / "inp" / "samples.npz")["images"][..., 0]
    np.testing.assert_array_equal(results[:, :4], np.broadcast_to(picture[:4], (2, 4, 8)))  # kept pixels


def test_labels_at_guidance_0_are_refused_as_having_no_effect(cond_run, tmp_path):
    """Before, labels=3 and labels=7 gave byte-identical images at guidance=0, and settings.json recorded them."""
    with pytest.raises(
        ValueError, match=r"^labels=3 has no effect at guidance=0 \(the unconditional prediction"
    ):
        sample_to(tmp_path / "a", cond_run["ckpt"], "labels=3", "guidance=0", "n=2")
    assert not (tmp_path / "a").exists()
    # No labels: fine. Before (helper report), settings.json listed every class the samples never saw, the grid
    # had a row per class, and evaluate.py scored a cond_accuracy of the unconditional samples.
    settings = sample_to(tmp_path / "b", cond_run["ckpt"], "guidance=0", "n=4")
    assert settings["guidance"] == 0.0 and settings["labels"] is None
    assert Image.open(tmp_path / "b" / "grid.png").size == grid_size(rows=2, cols=2)  # not 4 rows of 1
    options = SampleOptions("sample", 4, 0, None, "fp32", 1, 0.0)
    loaded = load_model(cond_run["ckpt"])
    assert scored_conditions(loaded, options, str(cond_run["ckpt"]), None).labels is None


def test_a_grid_gives_each_label_a_row_of_its_own_when_n_is_not_a_multiple(cond_run, tmp_path):
    # Before (helper report): 10 samples of 3 labels were laid in rows of 4 as 3333 / 7779 / 99.
    settings = sample_to(tmp_path / "a", cond_run["ckpt"], "labels=[3,7,9]", "guidance=2", "n=10")
    assert settings["labels"] == [3, 3, 3, 3, 7, 7, 7, 9, 9, 9]
    grid = np.asarray(Image.open(tmp_path / "a" / "grid.png").convert("L"))
    assert grid.shape[::-1] == grid_size(rows=3, cols=4)
    factor = grid_size(rows=3, cols=4)[0] // (2 + 4 * 10)

    def tile(row: int, col: int) -> np.ndarray:
        top, left = factor * (2 + row * 10), factor * (2 + col * 10)
        return grid[top : top + 8 * factor, left : left + 8 * factor]

    assert (tile(1, 3) == 255).all() and (tile(2, 3) == 255).all()  # the 7s' and 9s' rows end blank
    samples = np.load(tmp_path / "a" / "samples.npz")["images"][..., 0]
    assert np.array_equal(tile(2, 0)[::factor, ::factor], samples[7])  # the first 9 starts the third row


def test_samples_a_huge_guidance_drives_out_of_range_name_the_guidance_not_the_weights(cond_run, tmp_path):
    # Before: "the weights in … are broken (did training diverge?)" for weights that sample well at guidance 2.
    with pytest.raises(ValueError) as raised:
        sample_to(tmp_path / "a", cond_run["ckpt"], "guidance=1e30", "sampler.clip_x0=null", "n=2")
    assert str(raised.value) == (
        "2 of 2 samples are not finite (NaN/inf): guidance=1e+30 pushes them out of range (usual scales are "
        "1-10); nothing was written"
    )
    assert not (tmp_path / "a").exists()


@pytest.mark.slow  # the FID callback computes reference statistics: ~17 s
def test_a_huge_guidance_is_named_by_difflab_load_and_the_training_grid_and_fid(cond_run, tmp_path):
    # Before: "the weights … are broken" (difflab.load), "the EMA network has diverged; lower optim.lr …" (the
    # grid), and the FID callback scored the NaN samples as black images without a word.
    cause = "guidance=1e+30 pushes them out of range (usual scales are 1-10)"
    with pytest.raises(ValueError, match=re.escape(f"are not finite (NaN/inf): {cause}")):
        difflab.load(cond_run["ckpt"]).sample(2, guidance=1e30, clip_x0=None, steps=3)
    huge = [*FAST_TRAIN, "model.num_classes=10", "trainer.max_steps=2", "sampler.clip_x0=null"]
    grid = [*huge, "callbacks.sample_grid.num_samples=10", "callbacks.sample_grid.guidance=1e30"]
    with pytest.raises(NonFiniteError, match=re.escape(f"has non-finite pixels: {cause}")):
        train(compose_config("train", grid, tmp_path / "grid"))
    fid = [*huge, "callbacks=[default,fid]", "callbacks.sample_grid=null", "callbacks.fid.every_n_steps=0"]
    fid += [
        "callbacks.fid.num_samples=10",
        "callbacks.fid.guidance=1e30",
        "callbacks.fid.best_checkpoint=null",
    ]
    fid += [*SMALL_METRICS, f"metrics.cache_dir={tmp_path / 'cache'}"]
    with pytest.raises(NonFiniteError, match=re.escape(f"10 of 10 samples are not finite: {cause}")):
        train(compose_config("train", fid, tmp_path / "fid"))


def test_labels_out_of_range_end_in_one_line(cond_run, tmp_path):
    result = run_cli("sample.py", f"ckpt={cond_run['ckpt']}", f"out={tmp_path / 'out'}", "labels=[3,12]")
    assert one_error_line(result) == (
        "error: labels=[3, 12]: the model knows classes 0..9 (give one or a list)"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("labels", [3.5, True, "3", [1, 2.0], [False], []])
def test_labels_that_are_no_class_number_are_one_line(labels):
    """labels=3.5 was a TypeError traceback and labels=true was taken as class 1."""
    with pytest.raises(ValueError, match=r"the model knows classes 0\.\.9 \(give one or a list\)"):
        requested_labels("labels", 10, labels, 1.0, 4, "ckpt")


def test_labels_given_as_one_class_or_a_list():
    assert requested_labels("labels", 10, 3, 1.0, 4, "ckpt") == ([3, 3, 3, 3], [3])
    assert requested_labels("labels", 10, OmegaConf.create([7, 2]), 1.0, 4, "ckpt") == ([7, 7, 2, 2], [7, 2])


def test_labels_name_the_classes_of_a_model_whose_classes_have_names():
    names = ["cat", "dog", "Red_Fox"]
    assert requested_labels("labels", 3, ["dog", 0, "red_fox"], 1.0, 3, "ckpt", names) == (
        [1, 0, 2],
        [1, 0, 2],
    )
    with pytest.raises(
        ValueError,
        match=r"'dgo' is no class of this model \(its classes: cat, dog, Red_Fox\); did "
        r"you mean 'dog'\?",
    ):
        requested_labels("labels", 3, ["cat", "dgo"], 1.0, 3, "ckpt", names)
    with pytest.raises(
        ValueError, match=r"classes 0\.\.2 \(give one or a list, or their names; quote a name"
    ):
        requested_labels("labels", 3, 5, 1.0, 3, "ckpt", names)


def test_numbers_name_folders_named_by_numbers_and_an_ambiguous_one_is_refused():
    """Review of 4617a5b: folders 0 1 10 2 sort as text, so labels=2 (Hydra reads a number) meant folder 10, and on
    folders 3 5 7, labels=5 was refused though it is a class's name (difflab.load's labels=['5'] took it)."""
    assert requested_labels("labels", 4, [2, "10"], 1.0, 2, "ckpt", ["0", "1", "10", "2"])[1] == [3, 2]
    assert requested_labels("labels", 3, 5, 1.0, 1, "ckpt", ["3", "5", "7"])[1] == [1]
    with pytest.raises(ValueError, match=r"'2' is no class of this model \(its classes: 3, 5, 7\)"):
        requested_labels("labels", 3, 2, 1.0, 1, "ckpt", ["3", "5", "7"])
    with pytest.raises(ValueError, match=r"2 is class number 2 \('b'\) and the name of class 1: give a name"):
        requested_labels("labels", 3, 2, 1.0, 1, "ckpt", ["a", "2", "b"])
    assert requested_labels("labels", 3, 1, 1.0, 1, "ckpt", ["a", "2", "b"])[1] == [1]
    # No labels= is every class, by number, whatever their names (a review found it refused as ambiguous).
    assert requested_labels("labels", 3, None, 1.0, 3, "ckpt", ["a", "2", "b"])[1] == [0, 1, 2]


def test_a_name_is_matched_in_any_unicode_form_and_one_matching_several_classes_is_refused():
    assert requested_labels("labels", 1, "cafe\u0301", 1.0, 1, "ckpt", ["caf\u00e9"])[1] == [
        0
    ]  # macOS's form
    with pytest.raises(
        ValueError, match=r"'CAT' matches several classes \(Cat, cat\): give one as it is written"
    ):
        requested_labels("labels", 2, "CAT", 1.0, 1, "ckpt", ["Cat", "cat"])


def test_sample_py_and_difflab_load_take_class_folder_names_as_labels(tmp_path):
    """Before, labels=[class_1] was refused: a model trained on class folders was sampled by number only, so a
    user had to work out the sorted folder order."""
    _, run = labelled_folder_run(tmp_path)
    ckpt = run / "checkpoints" / "last.ckpt"
    by_name = run_cli(
        "sample.py",
        f"ckpt={ckpt}",
        f"out={tmp_path / 'named'}",
        "labels=[class_1,class_0]",
        "n=4",
        "sampler.steps=2",
    )
    assert by_name.returncode == 0, by_name.stderr[-2000:]
    by_number = run_cli(
        "sample.py", f"ckpt={ckpt}", f"out={tmp_path / 'numbered'}", "labels=[1,0]", "n=4", "sampler.steps=2"
    )
    assert by_number.returncode == 0, by_number.stderr[-2000:]
    named = np.asarray(Image.open(tmp_path / "named" / "grid.png"))
    assert np.array_equal(named, np.asarray(Image.open(tmp_path / "numbered" / "grid.png")))
    # Before (helper report), only the numbers were recorded: on folders 1/ 2/ 80/, labels=80 read [2, 2].
    settings = json.loads((tmp_path / "named" / "settings.json").read_text())
    assert settings["labels"] == [1, 1, 0, 0]
    assert settings["label_names"] == ["class_1", "class_1", "class_0", "class_0"]
    pipe = difflab.load(ckpt)
    torch.testing.assert_close(
        pipe.sample(4, labels=["class_1", "class_0"], steps=2, seed=0),
        pipe.sample(4, labels=[1, 0], steps=2, seed=0),
        rtol=0,
        atol=0,
    )
    wrong = run_cli(
        "sample.py", f"ckpt={ckpt}", f"out={tmp_path / 'wrong'}", "labels=class_2", "n=4", "sampler.steps=2"
    )
    assert "'class_2' is no class of this model (its classes: class_0, class_1)" in one_error_line(wrong)


def test_guidance_on_a_model_trained_without_label_dropout_is_warned_of(cond_run, tmp_path, caplog):
    """Before, taken without a word: its "no label" embedding never trained, guidance pulls towards noise."""
    checkpoint = torch.load(cond_run["ckpt"], weights_only=True)
    checkpoint[CONFIG_KEY]["cond_drop_prob"] = 0.0
    never = tmp_path / "never_dropped.ckpt"
    torch.save(checkpoint, never)
    with caplog.at_level(logging.WARNING, logger="difflab"):
        sample_to(tmp_path / "guided", never, "labels=3", "guidance=3", "n=2")
    assert "trained with cond_drop_prob=0: its unconditional prediction" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="difflab"):
        sample_to(tmp_path / "plain", never, "labels=3", "n=2")  # guidance 1: the label's prediction alone
        sample_to(tmp_path / "dropped", cond_run["ckpt"], "labels=3", "guidance=3", "n=2")
    assert "cond_drop_prob=0" not in caplog.text
    # The training grid's guidance too, once, before the first step.
    overrides = [*FAST_TRAIN, "model.num_classes=10", "cond_drop_prob=0", "trainer.max_steps=1"]
    overrides += ["callbacks.sample_grid.guidance=2", "callbacks.sample_grid.num_samples=4"]
    with caplog.at_level(logging.WARNING, logger="difflab"):
        train(compose_config("train", overrides, tmp_path / "run"))
    assert caplog.text.count("guidance=2.0 on the SampleGrid of this run, trained with cond_drop_prob=0") == 1


def test_evaluate_starts_on_a_huge_n_of_a_class_conditional_checkpoint(cond_run, tmp_path, monkeypatch):
    """evaluate.py streams its samples, so n=10**12 starts generating, balanced over the classes (sample i of
    class i * 10 // n), as it does for an unconditional checkpoint. Before, it hung building every sample's class."""
    overrides = [f"ckpt={cond_run['ckpt']}", f"n={10**12}", "batch_size=3", "sampler.steps=2"]
    overrides += [*SMALL_METRICS, f"metrics.cache_dir={tmp_path / 'cache'}", f"out={tmp_path / 'r.json'}"]
    images, seen = evaluate_first_batch(monkeypatch, overrides, tmp_path)
    assert images.shape == (3, 1, 8, 8)
    assert seen[0]["labels"].tolist() == [0, 0, 0]  # the first of 10**12 samples are of class 0


def test_guidance_for_an_unconditional_checkpoint_is_refused(tiny_ckpt, tmp_path):
    cfg = compose_config("eval", [f"ckpt={tiny_ckpt}", "guidance=2", f"out={tmp_path / 'r.json'}"], tmp_path)
    with pytest.raises(ValueError) as error:
        evaluate(cfg)
    assert (
        str(error.value)
        == f"guidance=2 needs a conditional model or guide=<a weaker model>; {tiny_ckpt} is unconditional"
    )
    assert not (tmp_path / "r.json").exists()


def class_folder(root: Path, classes: int = 3, per_class: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
                root / f"class_{c}" / f"{i}.png"
            )
    return root


@pytest.mark.parametrize(
    ("data", "switch", "classes"),
    [
        ("mnist", "model.num_classes=10", 10),
        ("fashion_mnist", "data.condition=labels", 10),
        ("folder", "data.condition=labels", 3),  # the count comes from the class subfolders
    ],
)
def test_every_labelled_source_trains_class_conditionally(tmp_path, data, switch, classes):
    root = class_folder(tmp_path / "folder") if data == "folder" else shared_data_or_skip()
    overrides = [
        *FAST_TRAIN,
        f"data={data}",
        f"data.root={root}",
        "data.image_size=8",
        "data.channels=1",
        switch,
    ]
    overrides += ["trainer.max_steps=2", f"callbacks.sample_grid.num_samples={2 * classes}"]
    run = tmp_path / "run"
    train(compose_config("train", overrides, run))
    loaded = load_model(run / "checkpoints" / "last.ckpt")
    assert (loaded.condition, loaded.num_classes) == ("labels", classes)
    assert Image.open(run / "samples" / "final.png").size == grid_size(rows=classes, cols=2)


def labelled_folder_run(tmp_path: Path, *extra: str) -> tuple[Path, Path]:
    """(class folder tree, run folder) of a 2-step train.py run on 2 class folders, data.condition=labels."""
    root = class_folder(tmp_path / "folder", classes=2)
    overrides = [*CLI_FAST, "data=folder", f"data.root={root}", "data.image_size=8", "data.channels=1"]
    overrides += [
        "data.condition=labels",
        "trainer.max_steps=2",
        "callbacks.sample_grid.num_samples=4",
        *extra,
    ]
    run = tmp_path / "run"
    assert run_cli("train.py", *overrides, f"hydra.run.dir={run}").returncode == 0
    return root, run


def test_a_resume_on_data_with_another_class_count_names_the_data_not_an_override(tmp_path):
    """model.num_classes was never typed: it is counted in data.root, which has gained a class since."""
    root, run = labelled_folder_run(tmp_path)
    class_folder(root / "more", classes=1)  # a third class folder (more/class_0), found at any depth
    result = run_cli("train.py", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=4")
    line = one_error_line(result)
    assert "3 classes" in line and "2" in line and str(root) in line, line
    assert "drop those overrides" not in line, line


def test_a_resume_with_the_typed_class_count_on_data_that_gained_a_class_names_the_data(tmp_path):
    """Before, the typed model.num_classes=2 (inherited by the resume) met the data's 3 classes with "use
    model.num_classes=3", which the checkpoint then refused: advice that led in a circle."""
    root, run = labelled_folder_run(tmp_path, "model.num_classes=2")
    class_folder(root / "more", classes=1)
    result = run_cli("train.py", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=4")
    line = one_error_line(result)
    assert "3 classes" in line and "trained on 2" in line and str(root) in line, line
    assert "model.num_classes=3" not in line, line


def test_a_resume_on_data_whose_class_folders_were_renamed_is_refused(tmp_path):
    """Before, a class folder renamed between a run and its resume (same count) silently moved every later
    class to another label: sorted, class_0/class_1 became class_1/zeta, so label 0 meant the old class 1."""
    root, run = labelled_folder_run(tmp_path)
    stored = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)[CONFIG_KEY]
    assert stored["data"]["class_folders"] == ["class_0", "class_1"]
    (root / "class_0").rename(root / "zeta")
    result = run_cli("train.py", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=4")
    line = one_error_line(result)
    assert "class_0" in line and "zeta" in line and str(root) in line, line
    assert "drop those overrides" not in line, line


def test_a_model_trained_on_other_class_folders_is_refused_by_the_data(tmp_path):
    """The recorded class folders (data.class_folders) travel with a model's config: data whose folders differ
    would give its labels to other classes, in scoring as in training."""
    root = class_folder(tmp_path / "folder", classes=2)
    data = ImageDataModule(
        "folder", str(root), image_size=8, condition="labels", class_folders=["class_0", "cat"]
    )
    with pytest.raises(DataError, match=r"class_1.*cat|cat.*class_1"):
        data.setup()
    same = ImageDataModule(
        "folder", str(root), image_size=8, condition="labels", class_folders=["class_0", "class_1"]
    )
    same.setup()
    assert same.class_folders == ["class_0", "class_1"]


def labelled_folder_data(root: Path) -> list[str]:
    """The data= overrides of labelled_folder_run's data, at `root`."""
    return [
        "data=folder",
        f"data.root={root}",
        "data.image_size=8",
        "data.channels=1",
        "data.condition=labels",
    ]


def test_evaluate_with_data_on_renamed_class_folders_is_refused(tmp_path):
    """Review of 7f4e692: evaluate.py data=… built the data as given, without the model's recorded class folders, so
    conditioning accuracy was scored against labels that meant other classes."""
    root, run = labelled_folder_run(tmp_path)
    (root / "class_0").rename(root / "zeta")
    data = labelled_folder_data(root)
    result = run_cli(
        "evaluate.py", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "n=4", "sampler.steps=2", *data,
        f"metrics.cache_dir={tmp_path / 'cache'}", f"out={tmp_path / 'e.json'}",
    )  # fmt: skip
    assert "other class folders than the model was trained on (gone: class_0; new: zeta)" in one_error_line(
        result
    )
    assert not (tmp_path / "e.json").exists()


def test_evaluate_refuses_data_whose_labels_are_not_the_models_classes_without_data_condition(tmp_path):
    # Helper report: without data.condition=labels, the class-folder check was skipped and conditioning accuracy
    # was scored against the given data's labels: other folders (0.1), or data=digits, whose digit 0 was scored as
    # the model's folder class_0 (0.0).
    root, run = labelled_folder_run(tmp_path)
    (root / "class_0").rename(root / "zeta")
    ckpt = run / "checkpoints" / "last.ckpt"
    for i, (data, named) in enumerate(
        [
            (
                labelled_folder_data(root)[:-1],
                "other class folders than the model was trained on (gone: class_0",
            ),
            (
                ["data=digits", "data.image_size=8"],
                "data=digits has no class folders, but the model was trained ",
            ),
        ]
    ):
        out = tmp_path / f"e{i}.json"
        result = run_cli(
            "evaluate.py", f"ckpt={ckpt}", "n=4", "sampler.steps=2", *data,
            f"metrics.cache_dir={tmp_path / 'cache'}", f"out={out}",
        )  # fmt: skip
        assert named in one_error_line(result)
        assert not out.exists()
    # Review: a flat folder has no labels to mistake for the model's classes: scored, without cond_accuracy.
    flat = tmp_path / "flat"
    flat.mkdir()
    for folder in ("zeta", "class_1"):
        for picture in (root / folder).glob("*.png"):
            (flat / f"{folder}_{picture.name}").write_bytes(picture.read_bytes())
    out = tmp_path / "flat.json"
    result = run_cli(
        "evaluate.py", f"ckpt={ckpt}", "n=4", "sampler.steps=2", *labelled_folder_data(flat)[:-1],
        "metrics.num_reference=8", "metrics.reference_split=train", "metrics.kid_subset_size=2",
        "metrics.prc=false",
        f"metrics.cache_dir={tmp_path / 'cache'}", f"out={out}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["metrics"] and "cond_accuracy" not in report["metrics"]
    # What the generated classes' numbers name (before, only numbers: folders 1/ 2/ 80/ read "2" for 80).
    assert report["generated"]["class_names"] == ["class_0", "class_1"]


def test_a_class_folder_renamed_to_another_unicode_form_is_shown_by_its_code_points():
    # Before: "(gone: Ünï; new: Ünï)", two names that look the same (NFC against macOS's NFD).
    composed = "\u00dcn\u00ef"
    decomposed = unicodedata.normalize("NFD", composed)
    assert class_folder_changes(["a", composed], ["a", decomposed]) == (
        f"gone: {ascii(composed)}; new: {ascii(decomposed)}"
    )


def test_fine_tuning_on_other_class_folders_says_that_labels_change_meaning(tmp_path):
    # Before (helper report): init_from a labelled model onto a copy whose folder was renamed trained without a word.
    root, run = labelled_folder_run(tmp_path)
    (root / "class_0").rename(root / "zeta")
    data = labelled_folder_data(root)
    tuned = tmp_path / "tuned"
    result = run_cli(
        "train.py", *CLI_FAST, *data, "trainer.max_steps=1", "callbacks.sample_grid.num_samples=2",
        f"init_from={run}", f"hydra.run.dir={tuned}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        f"init_from={run} was trained on other class folders (gone: class_0; new: zeta): from here on each label "
        "means the class of the data now" in result.stdout + result.stderr
    )


def test_a_diffusers_export_keeps_the_class_names_for_labels(tmp_path):
    # Before (helper report): labels=[cat] on the exported folder was "the model knows classes 0..4".
    _, run = labelled_folder_run(tmp_path)
    out = tmp_path / "exported"
    exported = run_cli(
        "export.py", f"ckpt={run / 'checkpoints' / 'last.ckpt'}", "format=diffusers", f"out={out}"
    )
    assert exported.returncode == 0, exported.stderr[-2000:]
    pipe = difflab.load(out)
    torch.testing.assert_close(
        pipe.sample(2, labels=["class_1"], steps=2, seed=0),
        pipe.sample(2, labels=[1], steps=2, seed=0),
        rtol=0,
        atol=0,
    )


def test_a_resume_with_another_label_dropout_says_so(tmp_path):
    # Before, cond_drop_prob=0.5 on a resume changed what guidance relies on without a word.
    _, run = labelled_folder_run(tmp_path)
    result = run_cli(
        "train.py", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=3", "cond_drop_prob=0.5"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "the conditioning differs from the checkpoint's: cond_drop_prob=0.5 (checkpoint: 0.1); from step 2"
        in result.stdout + result.stderr
    )
