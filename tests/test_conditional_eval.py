"""evaluate.py on text-to-image and super-resolution checkpoints: the data's own balanced conditions are
scored, and a text model whose prompts name classes gets a conditioning accuracy."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FAST_TRAIN, compose_config

from difflab.run.evaluate import evaluate
from difflab.run.train import train


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "overrides"),
    [
        ("text", ["data.condition=text", "data.captions=templates"]),
        ("superres", ["data.condition=superres", "data.sr_factor=2"]),
    ],
)
def test_evaluate_scores_text_and_superres_models(kind: str, overrides: list[str], tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
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
    if kind == "text":  # the data's template prompts name the digits 0-9: two samples per class
        assert 0 <= report["metrics"]["cond_accuracy"] <= 1
        assert report["metrics"]["classifier_accuracy"] > 0.5
    else:
        assert "cond_accuracy" not in report["metrics"]
