"""evaluate.py: a checkpoint's samples or a folder of images scored against a dataset, reported as JSON, with a
warning when n or the reference set is too small for stable numbers, and the scores of a run's checkpoint logged
into that run's W&B run (its id read from the untrusted run folder)."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import warnings
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import compose_config, one_error_line, run_cli
from PIL import Image
from wandb_files import history_rows

from difflab.data import ImageDataModule
from difflab.data.scoring import uint8_batches
from difflab.evaluation.report import report_path
from difflab.evaluation.scoring import warn_if_too_few
from difflab.io.read_generated import open_image_set
from difflab.io.read_inputs import image_files
from difflab.io.results import IN_USE, check_writable_file, write_json
from difflab.io.write_images import writing_samples
from difflab.metrics.sample_size import small_sample_warning
from difflab.run.evaluate import evaluate
from difflab.run.evaluate_settings import read_evaluate_settings
from difflab.tracking.run_ids import ID_FILE, choose_run_id, read_run_id

# Small sets keep Lite0 (224 px on a CPU) to seconds; the numbers are not meaningful, the plumbing is.
SMALL = [
    "metrics.num_reference=40",
    "metrics.kid_subset_size=10",
    "metrics.kid_subsets=10",
    "sampler.steps=2",
]


@pytest.fixture
def trained_ckpt(tiny_run: Path) -> Path:
    """tiny_ckpt in a run folder of its own: without out=, evaluate.py reports into the checkpoint's run folder."""
    return tiny_run / "checkpoints" / "last.ckpt"


@pytest.fixture(scope="module")
def digits_val_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits held-out split written as sample.py would write samples: images/*.png + samples.npz."""
    out = tmp_path_factory.mktemp("digits_val")
    data = ImageDataModule("digits", image_size=8, channels=1)
    images = torch.cat(list(uint8_batches(data.dataset_for("val"), limit=40))).float() / 127.5 - 1
    with writing_samples(out, len(images)) as files:
        for batch in images.split(16):  # as sample.py writes them: batch by batch
            files.add(batch)
    return out


def run_eval(tmp_path: Path, *overrides: str) -> dict:
    cfg = compose_config(
        "eval", [*SMALL, f"metrics.cache_dir={tmp_path / 'cache'}", *overrides], tmp_path / "run"
    )
    return evaluate(cfg)


def test_checkpoint_report_names_every_metric_and_setting(trained_ckpt: Path, tmp_path: Path) -> None:
    report = run_eval(
        tmp_path,
        f"ckpt={trained_ckpt}",
        "n=12",
        "sampler=dpm_solver",
        "sampler.steps=3",
        "metrics.inception_score=true",
        "metrics.isc_splits=2",
    )
    # Without out=, the report goes into the checkpoint's run folder.
    written = json.loads((trained_ckpt.parent.parent / "metrics.json").read_text())
    assert written == report
    assert set(report["metrics"]) == {
        "fd_effl0",
        "kid",
        "kid_std",
        "precision",
        "recall",
        "is_effl0",
        "is_effl0_std",
    }
    assert report["metrics"]["fd_effl0"] > 0  # a 2-step model is far from real digits
    generated = report["generated"]
    assert generated["n"] == 12 and generated["weights"] == "ema" and generated["global_step"] == 2
    assert generated["sampler"]["steps"] == 3 and "DPMSolver" in generated["sampler"]["_target_"]
    # The reference defaults to the checkpoint's dataset and its held-out split.
    assert report["reference"] | {"cache_hit": None} == report["reference"] | {
        "dataset": "digits",
        "split": "val",
        "num_images": 40,
        "image_size": 8,
        "cache_hit": None,
    }
    assert report["metric_settings"]["extractor"] == "efficientnet_lite0"


def test_a_run_folder_given_as_ckpt_reports_into_that_folder(tiny_run: Path, tmp_path: Path) -> None:
    """README: `evaluate.py ckpt=<run>` writes `<run>/metrics.json`, as for `ckpt=<run>/checkpoints/last.ckpt`."""
    run_eval(tmp_path, f"ckpt={tiny_run}", "n=4")
    assert (tiny_run / "metrics.json").is_file()


def test_reference_statistics_are_cached_between_runs(trained_ckpt: Path, tmp_path: Path) -> None:
    first = run_eval(tmp_path, f"ckpt={trained_ckpt}", "n=4", "out=" + str(tmp_path / "a.json"))
    second = run_eval(tmp_path, f"ckpt={trained_ckpt}", "n=4", "out=" + str(tmp_path / "b.json"))
    assert (first["reference"]["cache_hit"], second["reference"]["cache_hit"]) == (False, True)
    assert first["metrics"] == pytest.approx(second["metrics"])  # same seed, same samples, same reference


def test_images_identical_to_the_reference_score_zero(digits_val_folder: Path, tmp_path: Path) -> None:
    """A folder holding exactly the reference images: FD ≈ 0, precision = recall = 1 — for PNGs,
    sample.py's output folder and its .npz alike."""
    for i, images in enumerate(
        [digits_val_folder / "images", digits_val_folder, digits_val_folder / "samples.npz"]
    ):
        report = run_eval(tmp_path, f"images={images}", "data=digits", f"out={tmp_path / f'{i}.json'}")
        assert report["generated"]["n"] == 40
        assert report["metrics"]["fd_effl0"] == pytest.approx(0, abs=1e-3)
        assert report["metrics"]["precision"] == report["metrics"]["recall"] == 1.0


def test_noisier_images_score_worse(digits_val_folder: Path, tmp_path: Path) -> None:
    clean = np.load(digits_val_folder / "samples.npz")["images"]
    rng = np.random.default_rng(0)
    fds = []
    for sigma in (20, 60):
        noisy = np.clip(clean + rng.normal(0, sigma, clean.shape), 0, 255).astype(np.uint8)
        np.savez(tmp_path / f"noisy{sigma}.npz", images=noisy)
        report = run_eval(
            tmp_path,
            f"images={tmp_path / f'noisy{sigma}.npz'}",
            "data=digits",
            f"out={tmp_path / f'{sigma}.json'}",
        )
        fds.append(report["metrics"]["fd_effl0"])
    assert 1 < fds[0] < fds[1]


def test_images_of_another_size_are_said_to_be_resized_to_the_reference_data(
    digits_val_folder: Path, tmp_path: Path
) -> None:
    """images= data= scores no model: pictures of another size are brought to the reference data's size, and the
    warning says so in those words, not as a model's input."""
    bigger = tmp_path / "bigger"
    bigger.mkdir()
    for picture in sorted((digits_val_folder / "images").glob("*.png")):
        Image.open(picture).resize((16, 16)).save(bigger / picture.name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_eval(tmp_path, f"images={bigger}", "data=digits", f"out={tmp_path / 'report.json'}")
    (message,) = [str(w.message) for w in caught if str(w.message).startswith(f"pictures in {bigger}")]
    assert message.startswith(
        f"pictures in {bigger} do not match the reference data's 1×8×8 images: resized 40"
    )
    assert "model" not in message


def test_a_folder_read_in_batches_says_which_pictures_its_warning_counted(tmp_path: Path) -> None:
    """The warning comes once, from the first batch that needed changes: it says so, instead of giving that
    batch's count as the folder's (before: "resized 5" for a folder of 12 such pictures)."""
    for i in range(12):
        Image.new("L", (16, 16), 20 * i).save(tmp_path / f"{i:02d}.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(open_image_set(tmp_path).batches((1, 8, 8), batch_size=5))
    assert [len(b) for b in batches] == [5, 5, 2]
    (message,) = [str(w.message) for w in caught]
    assert "resized 5 to 8×8" in message
    assert message.endswith("(counted in pictures 1-5 of 12; later ones are brought alike)")


def test_a_picture_that_does_not_decode_is_named_not_skipped(tmp_path: Path) -> None:
    """A generated set is scored whole or not at all: skipping a broken file, as a training folder does, would
    score fewer pictures than were given without a word."""
    for i in range(3):
        Image.new("L", (8, 8), 50 * i).save(tmp_path / f"{i}.png")
    (tmp_path / "3.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"cut short" * 10)
    with pytest.raises(ValueError, match=r"could not read image .*3\.png"):
        list(open_image_set(tmp_path).batches((1, 8, 8)))


def test_an_npz_stored_channels_first_is_named_so(tmp_path: Path) -> None:
    # Before: "images have 8 channels; expected 1, 2, 3 or 4", for ten 8×8 grayscale images stored (N, C, H, W).
    path = tmp_path / "samples.npz"
    np.savez(path, images=np.zeros((10, 1, 8, 8), dtype=np.uint8))
    with pytest.raises(
        ValueError,
        match=r"\(10, 1, 8, 8\) look like \(N, C, H, W\), channels first; expected "
        r"\(N, H, W, C\): save images\.transpose\(0, 2, 3, 1\)",
    ):
        list(open_image_set(path).batches((1, 8, 8)))


def test_a_file_that_is_neither_an_npz_nor_a_picture_is_named(tmp_path: Path) -> None:
    # Before, a .npy of 10 images was read as one broken picture: "holds 1 image; need at least 2".
    path = tmp_path / "samples.npy"
    np.save(path, np.zeros((10, 8, 8, 1), dtype=np.uint8))
    with pytest.raises(ValueError) as error:
        open_image_set(path)
    assert str(error.value).startswith(f"{path} is neither an .npz nor a picture (.bmp, ")
    assert str(error.value).endswith(
        "give a folder of generated images, or an .npz holding them as uint8 (N, H, W, C)"
    )


def test_an_npz_of_another_size_is_converted_and_scored_as_a_folder_of_it_is(
    digits_val_folder: Path, tmp_path: Path
) -> None:
    """images=<.npz> of colour 16×16 pictures against 1×8×8 digits is brought to the reference data's shape with
    the folder's warning and scores as the same pictures in a folder do (before: refused, while the folder was
    resized)."""
    bigger = tmp_path / "bigger"
    bigger.mkdir()
    for picture in sorted((digits_val_folder / "images").glob("*.png")):
        Image.open(picture).convert("RGB").resize((16, 16)).save(bigger / picture.name)
    npz = tmp_path / "bigger.npz"
    np.savez(npz, images=np.stack([np.asarray(Image.open(p)) for p in sorted(bigger.glob("*.png"))]))
    reports, messages = [], []
    for i, images in enumerate([bigger, npz]):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            reports.append(
                run_eval(tmp_path, f"images={images}", "data=digits", f"out={tmp_path / f'{i}.json'}")
            )
        messages += [str(w.message) for w in caught if str(w.message).startswith(f"pictures in {images}")]
    folder_message, npz_message = messages
    assert npz_message == (
        f"pictures in {npz} do not match the reference data's 1×8×8 images: resized 40 to 8×8 (bigger.npz[0] "
        "16×16, bigger.npz[1] 16×16, bigger.npz[2] 16×16, … 37 more); converted 40 to L (bigger.npz[0] RGB, "
        "bigger.npz[1] RGB, bigger.npz[2] RGB, … 37 more)"
    )
    # The same words as the folder's warning, the pictures named by their index in the .npz.
    assert folder_message.startswith(
        f"pictures in {bigger} do not match the reference data's 1×8×8 images: resized 40"
    )
    assert "; converted 40 to L (" in folder_message
    assert reports[1]["metrics"] == reports[0]["metrics"]


@pytest.mark.parametrize("given", ["images", "samples.npz"])
def test_reference_data_of_an_unusual_channel_count_is_named_as_such(
    digits_val_folder: Path, given: str
) -> None:
    """images= against a data= of 2 channels (a custom datamodule): no model is involved, so the error names the
    reference data's images (before: "cannot load pictures for a model with 2 channels")."""
    with pytest.raises(ValueError) as error:
        next(open_image_set(digits_val_folder / given).batches((2, 8, 8)))
    assert str(error.value) == (
        "cannot load pictures as the reference data's 2×8×8 images: only 1, 3 or 4 channels are supported, not 2"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "give exactly one of ckpt=<checkpoint> (generate and score) or images="),
        (("images=somewhere",), "images=… needs the dataset to compare against: add data=<name>"),
        (("images=nowhere", "data=digits"), "generated image not found: nowhere"),
        (("ckpt=missing.ckpt",), "checkpoint not found: missing.ckpt"),
        (("images=x", "data=digits", "metrics.extractor=vgg"), "unknown feature extractor 'vgg'"),
        (("images=x", "data=digits", "metrics.reference_split=test"), "metrics.reference_split='test'"),
    ],
)
def test_bad_input_is_named(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        run_eval(tmp_path, *args, f"out={tmp_path / 'report.json'}")
    assert str(error.value).startswith(message)
    assert not (tmp_path / "report.json").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # Before, a word for a flag was truthy: prc=no computed precision/recall (the report storing "prc": "no").
        ("metrics.prc=no", "metrics.prc='no' is not true or false"),
        ("metrics.prc=flase", "metrics.prc='flase' is not true or false"),
        ("metrics.prc=maybe", "metrics.prc='maybe' is not true or false"),
        ("metrics.inception_score=flase", "metrics.inception_score='flase' is not true or false"),
        ("log_wandb=no", "log_wandb='no' is not true or false"),
        # Before, NaN scores and exit 0.
        ("metrics.kid_subsets=0", "metrics.kid_subsets=0 must be at least 1"),
        ("metrics.kid_subset_size=0", "metrics.kid_subset_size=0 must be at least 1"),
        # Before, silently the whole split.
        (
            "metrics.num_reference=0",
            "metrics.num_reference=0 must be at least 1, or null for the whole split",
        ),
    ],
)
def test_a_bad_metric_setting_or_flag_is_one_line_before_any_work(
    tmp_path: Path, override: str, message: str
):
    cfg = compose_config("eval", [f"ckpt={tmp_path / 'model.ckpt'}", "n=8", override], tmp_path / "run")
    with pytest.raises(ValueError) as error:
        read_evaluate_settings(cfg)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # Before, "'<' not supported between instances of 'str' and 'int'".
        ("data.image_size=abc", "data.image_size='abc' is not a whole number"),
        # Before, taken: a word for a flag was truthy (data.download=no would download).
        ("data.download=no", "data.download='no' is not true or false"),
        ("data.pin_memory=maybe", "data.pin_memory='maybe' is not true or false"),
        ("data.batch_size=0", "data.batch_size=0 must be at least 1"),
    ],
)
def test_a_bad_reference_data_setting_is_one_line_before_any_work(
    tmp_path: Path, override: str, message: str
):
    overrides = [f"images={tmp_path / 'samples.npz'}", "data=digits", override]
    with pytest.raises(ValueError) as error:
        read_evaluate_settings(compose_config("eval", overrides, tmp_path / "run"))
    assert str(error.value) == message


def test_too_few_samples_for_the_inception_score_are_refused_before_generating(tmp_path: Path) -> None:
    """Before, the 8 samples were generated and embedded, and the run failed with 'the Inception Score needs at
    least 10 samples (one per split), got 8', writing no report."""
    overrides = [f"ckpt={tmp_path / 'model.ckpt'}", "n=8", "metrics.inception_score=true"]
    with pytest.raises(ValueError) as error:
        read_evaluate_settings(compose_config("eval", overrides, tmp_path / "run"))
    assert str(error.value) == (
        "n=8 is too few for the Inception Score (metrics.inception_score=true): it needs at least "
        "metrics.isc_splits=10 samples (one per split); raise n or lower metrics.isc_splits"
    )
    read_evaluate_settings(compose_config("eval", [*overrides, "metrics.isc_splits=8"], tmp_path / "run"))


def test_a_mistyped_metric_flag_is_refused_before_the_checkpoint_is_read(tmp_path: Path) -> None:
    result = run_cli("evaluate.py", f"ckpt={tmp_path / 'model.ckpt'}", "n=8", "metrics.prc=no")
    assert one_error_line(result) == "error: metrics.prc='no' is not true or false"


def test_existing_report_is_refused_and_kept(trained_ckpt: Path, tmp_path: Path) -> None:
    report = tmp_path / "metrics.json"
    report.write_text("{}")
    result = run_cli(
        "evaluate.py", *SMALL, f"ckpt={trained_ckpt}", f"out={report}", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {report} already exists; choose another out= (results are never overwritten)"
    )
    assert report.read_text() == "{}"


def test_a_report_name_another_evaluation_took_meanwhile_moves_on_and_a_named_one_does_not(tmp_path) -> None:
    # Two evaluations of one run's checkpoints side by side both chose <run>/metrics.json before their work;
    # before, the second did all of it and then failed: "could not write …/metrics.json: File exists".
    taken = tmp_path / "metrics.json"
    taken.write_text("{}")
    assert write_json({"fd": 1.0}, taken, or_next_free=True) == tmp_path / "metrics_2.json"
    assert json.loads((tmp_path / "metrics_2.json").read_text()) == {"fd": 1.0}
    with pytest.raises(
        ValueError, match=rf"^could not write {taken}: File exists; the result is printed above"
    ):
        write_json({"fd": 1.0}, taken)  # out=<file> the user named: never another file than that
    assert taken.read_text() == "{}"


def test_out_given_a_folder_puts_the_report_in_it(tmp_path: Path) -> None:
    # Before: an existing folder was refused as "already exists", and out=new/ wrote a file named new.
    folder = tmp_path / "reports"
    folder.mkdir()
    assert report_path(str(folder), None, str(tmp_path)) == folder / "metrics.json"
    (folder / "metrics.json").write_text("{}")
    assert report_path(str(folder), None, str(tmp_path)) == folder / "metrics_2.json"
    assert report_path(f"{tmp_path / 'new'}/", None, str(tmp_path)) == tmp_path / "new" / "metrics.json"
    assert report_path(str(tmp_path / "r.json"), None, str(tmp_path)) == tmp_path / "r.json"


def test_evaluate_shows_its_own_warnings_as_one_line_as_train_does(tmp_path: Path) -> None:
    """Before: '…/evaluation/scoring.py:45: UserWarning: pictures in …' and then the code line 'for batch in
    batches:' (train.py alone showed difflab's warnings as their message)."""
    pictures = tmp_path / "pics"
    pictures.mkdir()
    for name, color in (("a", "red"), ("b", "blue")):
        Image.new("RGB", (12, 12), color).save(pictures / f"{name}.png")
    small = ["metrics.reference_split=train", "metrics.prc=false", "metrics.kid_subset_size=2"]
    result = run_cli("evaluate.py", f"images={pictures}", "data=digits", *small, f"out={tmp_path / 'r.json'}")
    assert result.returncode == 0, result.stderr[-2000:]
    shown = result.stdout + result.stderr
    assert f"warning: UserWarning: pictures in {pictures} do not match the reference data's" in shown
    assert "scoring.py:" not in shown and "for batch in batches" not in shown


def test_a_report_below_a_file_names_the_file(tmp_path: Path) -> None:
    """Before: 'cannot write …/afile/x.json: File exists', where the trouble is that afile is no folder."""
    blocker = tmp_path / "afile"
    blocker.write_text("mine")
    with pytest.raises(ValueError) as error:
        check_writable_file(blocker / "x.json")
    assert str(error.value) == f"cannot write {blocker / 'x.json'}: {blocker} is a file, not a folder"
    assert blocker.read_text() == "mine"


def test_data_that_disagrees_with_the_checkpoint_is_named(trained_ckpt: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="makes 1-channel 8px images but data= gives 1-channel 16px"):
        run_eval(tmp_path, f"ckpt={trained_ckpt}", "data=digits", "data.image_size=16")


@pytest.mark.parametrize("text", ["3xk9q2lm\n", "run_2024-01", "a" * 128])
def test_a_plausible_run_id_is_read(tmp_path: Path, text: str) -> None:
    (tmp_path / ID_FILE).write_text(text)
    assert read_run_id(tmp_path) == text.strip()


@pytest.mark.parametrize(
    "text", ["", "a" * 129, "../../other", "id with spaces", "abc\ndef", "$(rm -rf ~)", "\x00\xff"]
)
def test_an_implausible_run_id_is_ignored_with_a_warning(tmp_path: Path, text: str, caplog) -> None:
    (tmp_path / ID_FILE).write_bytes(text.encode("utf-8", "surrogateescape") if text else b"")
    with caplog.at_level(logging.WARNING, logger="difflab"):
        assert read_run_id(tmp_path) is None
    assert str(tmp_path / ID_FILE) in caplog.text
    # A resume does not adopt it either: it takes the checkpoint's id (or a new one).
    assert choose_run_id(None, tmp_path, {"logger": {"wandb": {"id": "fromckpt"}}}) == "fromckpt"


def test_no_id_file_is_no_run_id_and_no_warning(tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="difflab"):
        assert read_run_id(tmp_path) is None
    assert not caplog.text


def test_warning_names_the_sizes_and_what_gives_stable_numbers() -> None:
    line = small_sample_warning(64, 90, "fd_effl0", 1280, prc=True)
    assert "n=64" in line and "90 reference images" in line
    assert "1,280 features" in line  # singular covariances below the feature width
    assert "0.73 at 10,000" in line and "13.8 at 90" in line  # the README's FD-vs-n tables
    assert "precision/recall are inflated" in line and "0.94 at 64" in line
    assert small_sample_warning(10_000, 10_000, "fd_effl0", 1280, prc=True) is None
    # Between the feature width and 10,000, only the Fréchet distance's bias is named.
    mid = small_sample_warning(2_000, 5_000, "fd_effl0", 1280, prc=True)
    assert "fd_effl0" in mid and "features" not in mid and "precision" not in mid
    assert "precision" not in small_sample_warning(64, 90, "fid", 2048, prc=False)


def test_the_warning_for_a_few_images_leaves_out_the_precision_recall_that_are_left_out(caplog) -> None:
    evaluator = SimpleNamespace(keep_features=100, prc=True, fd_key="fd_effl0", feature_dim=1280)
    evaluator.reference_split = "train"
    with caplog.at_level(logging.WARNING, logger="difflab"):
        warn_if_too_few(evaluator, 3, 90)
    assert "n=3 samples" in caplog.text and "precision" not in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="difflab"):
        warn_if_too_few(evaluator, 4, 90)
    assert "precision/recall are inflated" in caplog.text
    # Before, keep_features=5 gave precision 1.0 and recall 1.0 of 5 images each without a word.
    caplog.clear()
    evaluator.keep_features, evaluator.kid_subsets = 5, 100
    with caplog.at_level(logging.WARNING, logger="difflab"):
        warn_if_too_few(evaluator, 12, 40)
    assert (
        "metrics.keep_features=5: KID and precision/recall are computed from 5 images of each set alone"
        in caplog.text
    )


@pytest.fixture
def run_folder(tiny_ckpt: Path, tmp_path: Path) -> Path:
    """A training run's folder as train.py leaves it with W&B on: its checkpoint and its run id."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_ckpt, run / "checkpoints" / "last.ckpt")
    (run / ID_FILE).write_text("evalrun1\n")
    return run


def test_scores_of_a_runs_checkpoint_go_to_its_wandb_run(run_folder: Path, tmp_path: Path, caplog) -> None:
    ckpt = run_folder / "checkpoints" / "last.ckpt"
    overrides = [*SMALL, f"metrics.cache_dir={tmp_path / 'cache'}", f"ckpt={ckpt}", "n=12"]
    with caplog.at_level(logging.WARNING, logger="difflab"):
        report = evaluate(compose_config("eval", overrides, tmp_path / "unused"))
    assert "n=12 samples against 40 reference images" in caplog.text  # and the numbers are flagged
    (wandb_run,) = (run_folder / "wandb").glob("offline-run-*-evalrun1")
    rows = [row for row in history_rows(wandb_run) if "eval/fd_effl0" in row]
    assert len(rows) == 1
    assert rows[0]["eval/fd_effl0"] == pytest.approx(report["metrics"]["fd_effl0"])
    assert rows[0]["eval/n"] == 12 and rows[0]["trainer/global_step"] == 2


def test_scores_of_a_run_folder_given_as_ckpt_go_to_its_wandb_run(run_folder: Path, tmp_path: Path) -> None:
    """README: `evaluate.py ckpt=<run>` scores <run>/checkpoints/last.ckpt, so its scores are logged into the run's
    W&B run as `ckpt=<run>/checkpoints/last.ckpt` logs them."""
    overrides = [*SMALL, f"metrics.cache_dir={tmp_path / 'cache'}", f"ckpt={run_folder}", "n=4"]
    report = evaluate(compose_config("eval", overrides, tmp_path / "unused"))
    assert (run_folder / "metrics.json").is_file()
    (wandb_run,) = (run_folder / "wandb").glob("offline-run-*-evalrun1")
    rows = [row for row in history_rows(wandb_run) if "eval/fd_effl0" in row]
    assert len(rows) == 1
    assert rows[0]["eval/fd_effl0"] == pytest.approx(report["metrics"]["fd_effl0"])
    assert rows[0]["eval/n"] == 4 and rows[0]["trainer/global_step"] == 2


def test_scores_of_a_read_only_run_folder_are_not_logged_to_a_temporary_wandb_folder(
    tiny_ckpt: Path, tmp_path: Path, small_disk, caplog
) -> None:
    """Before, W&B fell back to a temporary folder (/tmp/wandb) that no `wandb sync` of the run finds, and the
    scores were said to be logged to the run."""
    disk = small_disk("8m")
    (disk / "checkpoints").mkdir()
    shutil.copy(tiny_ckpt, disk / "checkpoints" / "last.ckpt")
    (disk / ID_FILE).write_text("evalrun1\n")
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    overrides = [*SMALL, f"metrics.cache_dir={tmp_path / 'cache'}", f"ckpt={disk}", "n=4"]
    with caplog.at_level(logging.INFO, logger="difflab"):
        evaluate(compose_config("eval", [*overrides, f"out={tmp_path / 'report.json'}"], tmp_path / "unused"))
    assert (tmp_path / "report.json").is_file()
    said = [r.getMessage() for r in caplog.records if "W&B" in r.getMessage()]
    assert said == [
        f"the scores were not logged to W&B: cannot write {disk / 'wandb'}: Read-only file system (W&B would keep "
        "them in a temporary folder no sync of the run finds); the report holds them"
    ]


def test_a_hostile_run_id_is_not_used_and_the_report_is_still_written(
    run_folder: Path, tmp_path: Path, caplog
) -> None:
    (run_folder / ID_FILE).write_text("x/../../../elsewhere\n")
    ckpt = run_folder / "checkpoints" / "last.ckpt"
    overrides = [*SMALL, f"metrics.cache_dir={tmp_path / 'cache'}", f"ckpt={ckpt}", "n=4"]
    with caplog.at_level(logging.WARNING, logger="difflab"):
        evaluate(compose_config("eval", overrides, tmp_path / "unused"))
    assert (run_folder / "metrics.json").is_file()
    assert not (run_folder / "wandb").exists()
    assert "wandb_run_id" in caplog.text


def test_guidance_without_a_checkpoint_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    """evaluate.py's settings are read and checked in one place, before the report's folder is made or the
    feature network is loaded."""
    reports = tmp_path / "reports"
    with pytest.raises(ValueError, match=r"^guidance=2 needs ckpt=<a conditional checkpoint>, not images="):
        run_eval(tmp_path, "images=x", "data=digits", "guidance=2", f"out={reports / 'report.json'}")
    assert not reports.exists()


def test_a_guide_equal_to_the_model_scores_the_same_samples(trained_ckpt: Path, tmp_path: Path) -> None:
    """evaluate.py guide=… guidance=… (autoguidance) generates what sample.py would: with the model as its own
    guide, g + s(m − g) = m, so the unconditional model's scores are the unguided ones, and the report says so."""
    common = [f"ckpt={trained_ckpt}", "n=8", "log_wandb=false"]
    plain = run_eval(tmp_path, *common, f"out={tmp_path / 'plain.json'}")
    guided = run_eval(
        tmp_path, *common, f"guide={trained_ckpt}", "guidance=3", f"out={tmp_path / 'guided.json'}"
    )
    assert guided["metrics"] == plain["metrics"]
    assert guided["generated"]["guide"] == str(trained_ckpt) and guided["generated"]["guidance"] == 3.0
    with pytest.raises(ValueError, match="guide=.* give ckpt=, not images="):
        run_eval(tmp_path, "images=x", "data=digits", f"guide={trained_ckpt}")


def test_a_users_own_model_class_is_scored_once_allowed_explicitly(
    trained_ckpt: Path, tmp_path: Path
) -> None:
    """allowed_targets=[…] lets evaluate.py build a checkpoint (and a guide) of the user's own class, as sample.py."""
    from test_checkpoint import TinyNet, variant

    def own_class(ckpt: dict) -> None:
        ckpt["difflab_config"]["model"] = {"_target_": "test_checkpoint.TinyNet", "channels": 1}
        ckpt["state_dict"] = {f"net.{k}": v for k, v in TinyNet().state_dict().items()}

    custom = variant(trained_ckpt, tmp_path / "custom.ckpt", own_class)
    common = [f"ckpt={custom}", "n=8", "log_wandb=false"]
    with pytest.raises(ValueError, match=r"allowed_targets=\[test_checkpoint.TinyNet\]"):
        run_eval(tmp_path, *common, f"out={tmp_path / 'refused.json'}")
    allowed = ["allowed_targets=[test_checkpoint.TinyNet]", f"out={tmp_path / 'report.json'}"]
    report = run_eval(tmp_path, *common, f"guide={custom}", "guidance=2", *allowed)
    assert report["generated"]["ckpt"] == str(custom) and report["generated"]["guide"] == str(custom)
    assert np.isfinite(report["metrics"]["fd_effl0"])


@pytest.mark.parametrize(
    "given", [["n=4"], ["seed=3", "sampler.steps=3"], ["sampler=heun"], ["precision=bf16"], ["prompt=seven"]]
)
def test_generation_settings_with_images_are_refused_not_ignored(tmp_path: Path, given: list[str]) -> None:
    # Before, images= scored every image it held whatever n= said (the report said n=8 for n=4), and seed=,
    # sampler… were taken without a word.
    out = tmp_path / "report.json"
    result = run_cli("evaluate.py", "images=x", "data=digits", *given, f"out={out}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {' '.join(given)} given, but images= is scored as it is (these settings make samples from "
        "ckpt=): drop them"
    )
    assert not out.exists()


def test_a_data_condition_nothing_reads_is_refused_not_ignored(tiny_ckpt: Path, tmp_path: Path) -> None:
    """Before, an unconditional model (or images=) scored with data.condition=superres or labels gave the plain
    data's scores to the digit, and the report did not say the setting went unused."""
    out = tmp_path / "report.json"
    given = ["data=digits", "data.condition=superres", "data.sr_factor=2", "n=4", *SMALL, f"out={out}"]
    with pytest.raises(ValueError) as refused:
        evaluate(compose_config("eval", [f"ckpt={tiny_ckpt}", *given], tmp_path))
    assert str(refused.value) == (
        f"data.condition=superres given, but {tiny_ckpt} holds an unconditional model: its samples are scored "
        "against the data's images as they are: drop data.condition="
    )
    images = tmp_path / "images"
    images.mkdir()
    for i in range(4):
        Image.fromarray(np.full((8, 8), i * 60, np.uint8)).save(images / f"{i}.png")
    with pytest.raises(ValueError, match=r"^data.condition=labels given, but images= are scored against"):
        evaluate(
            compose_config(
                "eval", [f"images={images}", "data=digits", "data.condition=labels", f"out={out}"], tmp_path
            )
        )
    assert not out.exists()


def test_a_reference_split_of_one_image_is_named(autoencoder_run: Path, tmp_path: Path) -> None:
    """A small image folder holds out one image (val_fraction of 10): the report names the reference split and
    its size, not 'need at least 2 images for a covariance, got 1' (which could be either set)."""
    from PIL import Image

    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    with pytest.raises(ValueError) as error:
        run_eval(tmp_path, f"images={folder}", "data=folder", f"data.root={folder}", "data.image_size=8")
    larger = (
        "(data.val_fraction sets how many images data.root holds out, or metrics.reference_split=train scores "
        "against the training split)"
    )
    assert str(error.value) == (
        f"the reference images, the val split of folder, are 1 image: the scores need at least 2 {larger}"
    )
    # An autoencoder's reconstructions of that split: before, without the way out.
    args = [f"ckpt={autoencoder_run}", "n=20", "data=folder", f"data.root={folder}", "data.image_size=8"]
    with pytest.raises(ValueError) as error:
        run_eval(tmp_path, *args, "data.channels=1")
    assert str(error.value) == f"the val split of folder has 1 images; need at least 2 {larger}"


def test_an_npz_is_counted_from_its_header_and_read_batch_by_batch(
    digits_val_folder: Path, tmp_path: Path
) -> None:
    """images=<.npz> of 50,000 samples need not fit in memory: the count comes from the array's header and the
    pixels are read a batch at a time, so a file cut short fails where the cut is, in one line naming it."""
    images = np.load(digits_val_folder / "samples.npz")["images"]
    whole = tmp_path / "whole.npz"
    np.savez_compressed(whole, arr_0=images)
    batches = list(open_image_set(whole).batches((1, 8, 8), batch_size=16))
    assert [len(b) for b in batches] == [16, 16, 8]
    assert torch.equal(torch.cat(batches), torch.from_numpy(images).permute(0, 3, 1, 2))

    cut = tmp_path / "cut.npz"  # stored (not deflated), the array's bytes end inside image 21
    with zipfile.ZipFile(cut, "w") as archive, archive.open("arr_0.npy", "w") as member:
        np.lib.format.write_array_header_1_0(
            member, {"descr": "|u1", "fortran_order": False, "shape": images.shape}
        )
        member.write(images[:20].tobytes() + images[20, :3].tobytes())
    image_set = open_image_set(cut)
    assert image_set.count == 40
    batches = image_set.batches((1, 8, 8), batch_size=16)
    assert len(next(batches)) == 16
    with pytest.raises(ValueError, match=rf"^could not read {cut}: arr_0.npy ends inside row 21 of 40$"):
        list(batches)


def test_a_refusal_after_the_report_path_is_checked_leaves_no_empty_folder(
    trained_ckpt: Path, tmp_path: Path
) -> None:
    # Before, the probe that checks out= can be written made its folders, and a later refusal left them empty.
    out = tmp_path / "reports" / "of" / "run.json"
    with pytest.raises(
        ValueError, match="the checkpoint makes 1-channel 8px images but data= gives 3-channel"
    ):
        run_eval(tmp_path, f"ckpt={trained_ckpt}", "data=digits", "data.channels=3", f"out={out}")
    assert not (tmp_path / "reports").exists()


def test_a_folder_of_class_subfolders_is_read_whole_and_a_dangling_link_is_named(tmp_path: Path) -> None:
    # Before: "no generated image files … in folder" for class subfolders (training reads them), and a link to
    # nothing was dropped without a word (the set scored with one image fewer than given).
    for name in ("cat", "dog"):
        (tmp_path / "set" / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(tmp_path / "set" / name / f"{i}.png")
    image_set = open_image_set(tmp_path / "set")
    assert image_set.count == 6
    assert [len(b) for b in image_set.batches((1, 8, 8), batch_size=4)] == [4, 2]
    (tmp_path / "set" / "dog" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(FileNotFoundError, match=r"gone.png is a link to nothing"):
        open_image_set(tmp_path / "set")


def results_folder(folder: Path, count: int) -> Path:
    """A folder as sample.py leaves it: images/ of `count` samples, grid.png (of some of them), settings.json."""
    (folder / "images").mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((8, 8), 10 * i, np.uint8)).save(folder / "images" / f"{i:06d}.png")
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(folder / "grid.png")
    (folder / "settings.json").write_text("{}")
    return folder


def test_sample_py_folders_inside_a_folder_give_their_samples_not_their_grids(tmp_path: Path) -> None:
    """Before, a folder with an images/ subfolder was taken for one sample.py folder and only images/ was read (a
    user's own pictures beside it were left out); and two sample.py folders under one parent were scored with
    their grid.png pictures as samples."""
    results_folder(tmp_path / "two" / "a", 3)
    results_folder(tmp_path / "two" / "b", 2)
    assert open_image_set(tmp_path / "two").count == 5
    assert open_image_set(tmp_path / "two" / "a").count == 3
    own = tmp_path / "own"
    for name in ("images/0.png", "more/1.png", "2.png"):
        (own / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(own / name)
    assert open_image_set(own).count == 3


def test_a_folder_holding_an_unfinished_sample_py_folder_is_refused(tmp_path: Path) -> None:
    # Before, only the unfinished folder itself was refused: its parent was scored with the part it held.
    stopped = results_folder(tmp_path / "parent" / "stopped", 2)
    (stopped / "settings.json").unlink()
    (stopped / IN_USE).write_text("")
    with pytest.raises(ValueError, match=r"stopped is unfinished"):
        open_image_set(tmp_path / "parent")


def test_a_training_run_folder_is_refused_as_images_and_pointed_to_its_checkpoint(tmp_path: Path) -> None:
    """Before, images=<a sweep folder> scored its jobs' samples/*.png training grids (and W&B's copies of them)
    as if they were samples: fd_effl0=157.9 with a resize warning as the only hint."""
    for job in ("0", "1"):
        run = tmp_path / "sweep" / job
        (run / "samples").mkdir(parents=True)
        (run / "checkpoints").mkdir()
        (run / "metrics.jsonl").write_text("")
        for name in ("step_0000002.png", "final.png"):
            Image.fromarray(np.zeros((40, 40), np.uint8)).save(run / "samples" / name)
    for given, run in ((tmp_path / "sweep", tmp_path / "sweep" / "0"), (tmp_path / "sweep" / "1", None)):
        run = run or given
        with pytest.raises(ValueError) as refused:
            open_image_set(given)
        assert str(refused.value) == (
            f"{run} is a training run folder: its pictures are sample grids, not samples; score its model with "
            f"evaluate.py ckpt={run}, or give images= the out= folder of a sample.py run"
        )
    # Its samples/ folder, the likeliest thing to give (review: it was read).
    run = tmp_path / "sweep" / "0"
    with pytest.raises(ValueError, match=rf"^{run / 'samples'} lies in the training run folder {run}: "):
        open_image_set(run / "samples")
    with pytest.raises(ValueError, match=r" lies in the training run folder "):
        open_image_set(run / "samples" / "final.png")  # one grid alone
    # A sample.py out= kept inside the run folder holds samples, and a folder of one's own that merely has a
    # checkpoints/ subfolder is no run folder (review: it was refused).
    assert open_image_set(results_folder(run / "dpm_samples", 3)).count == 3
    own = tmp_path / "mywork"
    (own / "checkpoints").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(own / f"{i}.png")
    assert open_image_set(own).count == 2


def test_sample_py_edits_the_samples_of_a_sample_py_folder_not_its_grid(tmp_path: Path) -> None:
    # Before, image=<a sample.py folder> edited its grid.png alone (the only picture at its top).
    folder = results_folder(tmp_path / "out", 3)
    assert image_files(folder) == sorted((folder / "images").iterdir())


def test_a_folder_run_started_with_a_relative_root_is_scored_from_any_folder(tmp_path, monkeypatch) -> None:
    """data.root=pics is recorded as the folder it names: before, evaluate.py started from another folder read the
    checkpoint's "pics" against its own and said "data root pics does not exist"."""
    from conftest import FAST_TRAIN

    from difflab.run.train import train

    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "pics").mkdir(parents=True)
    elsewhere.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(project / "pics" / f"{i}.png")
    monkeypatch.chdir(project)
    folder = [
        "data=folder",
        "data.root=pics",
        "data.image_size=8",
        "data.channels=1",
        "data.val_fraction=0.25",
    ]
    train(compose_config("train", [*FAST_TRAIN, "trainer.max_steps=2", *folder], tmp_path / "run"))
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["difflab_config"]["data"]["root"] == str(project / "pics")
    monkeypatch.chdir(elsewhere)
    report = run_eval(
        tmp_path, f"ckpt={ckpt}", "n=10", "metrics.num_reference=10", f"out={tmp_path / 'eval'}"
    )
    assert report["reference"]["dataset"] == "folder" and report["reference"]["num_images"] == 10
