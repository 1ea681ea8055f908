"""evaluate.py on text-to-image and super-resolution checkpoints: the data's own balanced conditions are
scored, and a text model whose prompts name classes (templates, or captions from files of labelled images)
gets a conditioning accuracy."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import FAST_TRAIN, compose_config
from PIL import Image

from difflab.data.captions import DIGIT_WORDS
from difflab.data.sources import open_splits
from difflab.evaluation.conditioning import conditioning_classifier
from difflab.evaluation.samples import labels_entry, scored_conditions
from difflab.generation import Conditions, SampleOptions
from difflab.generation.conditions import class_conditions
from difflab.run.evaluate import evaluate
from difflab.run.train import train


def captioned_digits(root: Path, per_class: int = 30) -> Path:
    """The first `per_class` digits of each class as <class>/<i>.png, each with its own .txt caption."""
    digits = open_splits("digits", None, 0.05, 0).train
    counts = [0] * 10
    for i in range(len(digits)):
        image, label = digits[i]
        if counts[label] == per_class:
            continue
        counts[label] += 1
        path = root / str(label) / f"{i}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path)
        words = ("a hand-drawn {word}", "the digit {digit}, written in ink")[i % 2]
        path.with_suffix(".txt").write_text(words.format(word=DIGIT_WORDS[label], digit=label))
    return root


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "overrides"),
    [
        ("text", ["data.condition=text", "data.captions=templates"]),
        ("files", ["data=folder", "data.image_size=8", "data.channels=1", "data.num_workers=0"]),
        ("superres", ["data.condition=superres", "data.sr_factor=2"]),
    ],
)
def test_evaluate_scores_text_and_superres_models(kind: str, overrides: list[str], tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    if kind == "files":
        root = captioned_digits(tmp_path / "captioned")
        overrides = [*overrides, f"data.root={root}", "data.val_fraction=0.2", "data.condition=text"]
        overrides += ["data.persistent_workers=false"]
    run = tmp_path / "run"
    train(compose_config("train", [*FAST_TRAIN, *overrides, "trainer.max_steps=2"], run))
    small = ["metrics.num_reference=40", "metrics.kid_subset_size=10", "metrics.prc=false"]
    small += [f"metrics.cache_dir={tmp_path / 'cache'}", "metrics.classifier_train_images=100"]
    ckpt = run / "checkpoints" / "last.ckpt"
    cfg = compose_config(
        "eval", [f"ckpt={ckpt}", "n=20", "sampler.steps=2", "batch_size=10", *small], tmp_path
    )
    report = evaluate(cfg)
    assert report["metrics"]["fd_effl0"] > 0 and report["generated"]["n"] == 20
    assert (run / "metrics.json").is_file()
    if kind in ("text", "files"):  # the prompts name the digits 0-9 (one held-out caption per class): 2 each
        assert 0 <= report["metrics"]["cond_accuracy"] <= 1
        assert report["metrics"]["classifier_accuracy"] > 0.5
        assert sorted(report["conditioning"]["per_class_accuracy"]) == list(range(10))
        assert report["generated"]["labels"] == "balanced: sample i is of prompt i * 10 // 20"
        assert len(report["generated"]["prompts"]) == 10
    else:
        assert "cond_accuracy" not in report["metrics"]
        assert report["generated"]["consistency"] is False
        # Before, evaluate.py had no superres.consistency: what sample.py makes with it could not be scored.
        consistent = compose_config(
            "eval",
            [f"ckpt={ckpt}", "n=20", "sampler.steps=2", "batch_size=10", "superres.consistency=true", *small],
            tmp_path,
        )
        projected = evaluate(consistent)
        assert projected["generated"]["consistency"] is True
        assert projected["metrics"]["fd_effl0"] != report["metrics"]["fd_effl0"]
        assert (run / "metrics_2.json").is_file()
        # Before, data.sr_factor=4 made the inputs at 4× for a 2× model and reported its scores.
        asked = [f"ckpt={ckpt}", "n=20", "sampler.steps=2", *small, "data=digits", "data.condition=superres"]
        with pytest.raises(
            ValueError, match=r"super-resolves 2× but data.sr_factor=4: .* add data.sr_factor=2"
        ):
            evaluate(compose_config("eval", [*asked, "data.sr_factor=4"], tmp_path))
        # Before, the hint named the size only, and data.condition came one refusal later.
        with pytest.raises(ValueError, match=r"data.image_size=8 data.condition=superres data.sr_factor=2$"):
            evaluate(compose_config("eval", [*asked[:-1], "data.image_size=16"], tmp_path))
        with pytest.raises(ValueError, match=r"data.image_size=8 data.sr_factor=2$"):
            evaluate(compose_config("eval", [*asked, "data.sr_factor=4", "data.image_size=16"], tmp_path))
        with pytest.raises(ValueError, match=r"add data.condition=superres data.sr_factor=2 \(or drop data="):
            evaluate(compose_config("eval", asked[:-1], tmp_path))


def test_prompts_that_name_no_class_say_why_there_is_no_accuracy(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="difflab"):
        assert conditioning_classifier(None, None, Conditions(None, prompts=["a square"]), "cpu") is None
    # Before, "(e.g. a folder without class subfolders)", also of prompts typed on a model of labelled digits.
    assert (
        "no conditioning accuracy: these prompts are not known to name classes (only the data's own are, where its "
        "captions come from templates or class subfolders; typed prompt= are not matched to classes)"
    ) in caplog.text
    # The data's own captions of a folder without classes: before, the same words about typed prompts.
    caplog.clear()
    flat = SimpleNamespace(num_classes=None, dataset="folder")
    with caplog.at_level("INFO", logger="difflab"):
        assert conditioning_classifier(None, flat, Conditions(None, prompts=["a square"]), "cpu") is None
    assert caplog.messages == [
        "no conditioning accuracy: data=folder has no classes (no class subfolders) to match prompts to"
    ]


def options(**given) -> SampleOptions:
    fixed = {
        "mode": "sample",
        "n": 20,
        "seed": 0,
        "batch_size": None,
        "precision": "fp32",
        "cpu_threads": None,
    }
    return SampleOptions(**{**fixed, "guidance": 1.0, **given})


@pytest.mark.parametrize(
    ("condition", "given", "message"),
    [
        (
            "text",
            {"labels": 3},
            r"^labels=3 given, but ckpt holds a text-to-image model, scored on the data's own",
        ),
        (
            "text",
            {"negative_prompt": "a 1", "guidance": 3.0},
            # Before, "drop negative_prompt=" alone, as if a negative prompt could never be scored.
            r"^negative_prompt=a 1 given, but ckpt holds a text.*: drop negative_prompt= \(or give prompt= too: a "
            r"negative prompt goes with prompts you choose\)$",
        ),
        (
            "superres",
            {"labels": 3},
            r"^labels=3 given, but ckpt holds a super-resolution model, scored on the held",
        ),
        ("superres", {"prompt": "a cat"}, r"^prompt=a cat given, but ckpt holds a super-resolution model"),
        (
            "labels",
            {"consistency": True},
            r"^superres.consistency=true given, but ckpt holds a class-conditional .*: only a super-resolution ",
        ),
        (
            "superres",
            {"guidance": 2.0},
            r"^guidance=2.0 has no effect on a super-resolution model: the low-res",
        ),
    ],
)
def test_settings_the_datas_own_conditions_leave_unused_are_refused(condition, given, message) -> None:
    """Before, evaluate.py scored these with the data's conditions alone and wrote a report recording guidance=2
    on a super-resolution model, or scores identical to the digit to a run without negative_prompt=."""
    model = SimpleNamespace(condition=condition, num_classes=None)
    with pytest.raises(ValueError, match=message):
        scored_conditions(model, options(**given), "ckpt", data=None)


def test_the_report_names_the_labels_given_not_a_balanced_spread() -> None:
    assert (
        labels_entry(class_conditions([3], 20), 20) == "labels=[3]: sample i is of class labels[i * 1 // 20]"
    )
    assert labels_entry(class_conditions(range(10), 20), 20) == "balanced: sample i is of class i * 10 // 20"


def test_a_single_class_has_no_conditioning_accuracy_and_is_still_scored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before, 'the conditioning classifier needs images of at least 2 classes (got [0])' ended evaluate.py (after
    the reference statistics) and a run's FID callback, with no FD or KID at all."""
    data = SimpleNamespace(num_classes=1, dataset="folder")
    with caplog.at_level("WARNING", logger="difflab"):
        assert conditioning_classifier(None, data, class_conditions([0], 6), "cpu") is None
    assert "no conditioning accuracy: data=folder has a single class" in caplog.text


@pytest.mark.slow  # Lite0 features of a few images: about 10 s
def test_a_single_class_run_is_fid_scored_during_training(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(6):
        (tmp_path / "tree" / "cat").mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
            tmp_path / "tree" / "cat" / f"{i}.png"
        )
    overrides = [*FAST_TRAIN, "data=folder", f"data.root={tmp_path / 'tree'}", "data.condition=labels"]
    overrides += [
        "data.image_size=8",
        "data.channels=1",
        "data.num_workers=0",
        "data.persistent_workers=false",
    ]
    overrides += ["data.val_fraction=0.34", "callbacks=[default,fid]", "callbacks.fid.every_n_steps=0"]
    overrides += [
        "callbacks.fid.at_train_end=true",
        "callbacks.fid.num_samples=4",
        "callbacks.fid.best_checkpoint=null",
    ]
    overrides += ["metrics.prc=false", "metrics.kid_subset_size=2", f"metrics.cache_dir={tmp_path / 'cache'}"]
    metrics = train(compose_config("train", [*overrides, "trainer.max_steps=2"], tmp_path / "run"))
    assert metrics["val/fd_effl0"] > 0 and "val/cond_accuracy" not in metrics
