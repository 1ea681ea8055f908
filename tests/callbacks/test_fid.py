"""The FID callback in a single process: when it runs, what it logs, and that it does not disturb training."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from conftest import FAST_TRAIN, compose_config, one_error_line, run_cli

from difflab.callbacks import FIDCallback
from difflab.metrics.evaluator import Evaluator
from difflab.run.common import instantiate_entries
from difflab.run.train import train


def test_fid_runs_each_epoch_and_at_the_end_once_per_step(tmp_path: Path, caplog) -> None:
    # digits: 1,707 training images at batch 256 -> 6 steps per epoch; 8 steps end inside epoch 2.
    overrides = [
        *FAST_TRAIN,
        "callbacks=[default,fid]",
        "trainer.max_steps=8",
        "data.batch_size=256",
        "callbacks.fid.every_n_steps=0",
        "callbacks.fid.every_n_epochs=1",
        "callbacks.fid.at_train_end=true",
        "callbacks.fid.num_samples=6",
        f"callbacks.fid.save_samples_to={tmp_path / 'fid'}",
        "metrics.num_reference=20",
        "metrics.kid_subset_size=5",
        "metrics.prc=false",
        f"metrics.cache_dir={tmp_path / 'cache'}",
        "callbacks.fid.best_checkpoint=null",
    ]
    with caplog.at_level("INFO", logger="difflab"):
        metrics = train(compose_config("train", overrides, tmp_path / "run"))
    (summary,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("last scores:")]
    assert f"val/fd_effl0={metrics['val/fd_effl0']:.4g}" in summary
    evaluated = sorted(p.name for p in (tmp_path / "fid").iterdir())
    assert evaluated == ["step_0000006.npz", "step_0000008.npz"]  # end of epoch 1, end of training
    assert metrics["val/fd_effl0"] > 0 and "val/kid" in metrics and "val/precision" not in metrics
    (log,) = (tmp_path / "run").rglob("metrics.csv")
    rows = [r for r in csv.DictReader(log.open()) if r.get("val/fd_effl0")]
    assert [int(r["step"]) for r in rows] == [6, 8]
    # The epoch each step was trained in (before, the row at the end of training said 2: the epoch after it).
    assert [int(float(r["epoch"])) for r in rows] == [0, 1]


def test_scores_at_the_end_of_a_last_whole_epoch_carry_that_epoch(tmp_path: Path) -> None:
    # One whole epoch, scored at its end only: the row says epoch 0 (before, 1, an epoch never trained).
    overrides = [
        *FAST_TRAIN,
        "callbacks=[default,fid]",
        "trainer.max_steps=-1",
        "trainer.max_epochs=1",
        "data.batch_size=256",
        "callbacks.fid.every_n_steps=0",
        "callbacks.fid.at_train_end=true",
        "callbacks.fid.num_samples=6",
        "metrics.num_reference=20",
        "metrics.kid_subset_size=5",
        "metrics.prc=false",
        f"metrics.cache_dir={tmp_path / 'cache'}",
        "callbacks.fid.best_checkpoint=null",
    ]
    train(compose_config("train", overrides, tmp_path / "run"))
    (log,) = (tmp_path / "run").rglob("metrics.csv")
    rows = [r for r in csv.DictReader(log.open()) if r.get("val/fd_effl0")]
    assert [(int(r["step"]), int(float(r["epoch"]))) for r in rows] == [(6, 0)]


def test_missing_inception_weights_stop_training_before_the_first_step(tmp_path: Path) -> None:
    """Standard FID offline without a weights file: one line naming the fix, before any training."""
    run = tmp_path / "run"
    no_cached_weights = {"TORCH_HOME": str(tmp_path / "torch_home")}
    result = run_cli(
        "train.py",
        *FAST_TRAIN,
        "callbacks=[default,fid]",
        "metrics=fid",
        f"hydra.run.dir={run}",
        env=no_cached_weights,
    )
    if result.returncode == 0:
        pytest.skip("InceptionV3 weights were downloadable here")
    last = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2 and last.startswith(
        "error: InceptionV3 weights for FID could not be downloaded"
    )
    assert "metrics.inception_weights=<path>" in last
    assert not (run / "checkpoints").exists()


def test_switching_it_off_is_one_override_and_an_idle_callback_costs_nothing(
    tmp_path: Path, monkeypatch
) -> None:
    # A recipe that scores during training: callbacks.fid=null alone takes the scores and best.ckpt away.
    cfg = compose_config("train", ["experiment=cifar10_ddpm", "callbacks.fid=null"], tmp_path / "run")
    assert "fid" not in {key for key, entry in cfg.callbacks.items() if entry is not None}
    names = [type(c).__name__ for c in instantiate_entries(cfg.callbacks)]
    assert "FIDCallback" not in names and "ModelCheckpoint" not in names

    # Every trigger off: nothing is loaded or computed at fit start (no reference statistics of 50k images).
    cfg = compose_config(
        "train",
        ["experiment=cifar10_ddpm", "callbacks.fid.every_n_steps=0", "callbacks.fid.at_train_end=false"],
        tmp_path / "run",
    )
    (fid,) = [c for c in instantiate_entries(cfg.callbacks) if isinstance(c, FIDCallback)]

    def must_not_run(*args, **kwargs):
        raise AssertionError("an idle FID callback computed something")

    monkeypatch.setattr(Evaluator, "reference", must_not_run)
    monkeypatch.setattr(Evaluator, "feature_extractor", must_not_run)
    fid.on_fit_start(None, None)
    assert not fid.scores_anything


def test_batch_size_auto_generates_as_sample_py_does(tmp_path: Path) -> None:
    overrides = [
        *FAST_TRAIN,
        "callbacks=[default,fid]",
        "trainer.max_steps=2",
        "callbacks.fid.every_n_steps=0",
        "callbacks.fid.at_train_end=true",
        "callbacks.fid.num_samples=6",
        "callbacks.fid.batch_size=auto",  # on a CPU: 64, capped at the samples
        f"callbacks.fid.save_samples_to={tmp_path / 'fid'}",
        "metrics.num_reference=20",
        "metrics.kid_subset_size=5",
        "metrics.prc=false",
        f"metrics.cache_dir={tmp_path / 'cache'}",
        "callbacks.fid.best_checkpoint=null",
    ]
    metrics = train(compose_config("train", overrides, tmp_path / "run"))
    assert metrics["val/fd_effl0"] > 0
    assert [p.name for p in (tmp_path / "fid").iterdir()] == ["step_0000002.npz"]


@pytest.mark.parametrize("value", ["0", "lots"])
def test_a_bad_batch_size_is_one_line_before_training(tmp_path: Path, value: str) -> None:
    result = run_cli(
        "train.py",
        *FAST_TRAIN,
        "callbacks=[default,fid]",
        f"callbacks.fid.batch_size={value}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert "callbacks.fid.batch_size" in one_error_line(result)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_kept_samples_that_do_not_fit_on_the_disk_leave_no_cut_short_file(
    tmp_path: Path, monkeypatch
) -> None:
    """callbacks.fid.save_samples_to on a full disk: before, np.savez_compressed wrote straight to step_*.npz and
    left it cut short (a file np.load cannot read), with no word of which file."""
    import contextlib
    import errno
    from types import SimpleNamespace

    import numpy as np
    import torch

    from difflab.callbacks import fid
    from difflab.io.atomic import NoSpaceLeft

    def fills_the_disk(file, **arrays):
        with contextlib.ExitStack() as stack:
            if isinstance(file, str | Path):
                file = stack.enter_context(open(file, "wb"))
            file.write(b"PK\x03\x04 half an archive")
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", fills_the_disk)
    callback = FIDCallback.__new__(FIDCallback)  # only where the samples go matters here
    callback.save_samples_to = tmp_path / "fid"
    trainer = SimpleNamespace(is_global_zero=True, global_step=6)
    with pytest.raises(NoSpaceLeft, match=r"no space left on device writing .*step_0000006\.npz"):
        fid.FIDCallback._save_samples(callback, trainer, torch.zeros(2, 1, 8, 8, dtype=torch.uint8), 2)
    assert list((tmp_path / "fid").iterdir()) == []
