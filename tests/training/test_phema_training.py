"""The post-hoc EMA callback in real (tiny) training runs: off by default, snapshots that hold the power-function
EMA of the weights the run trained, exact across a resume, snapshots of an abandoned continuation set aside."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, compose_config, few_snapshots, one_error_line, run_cli

from difflab.run.train import train
from difflab.training import PostHocEMA
from difflab.training.phema import sigma_rel_to_gamma
from difflab.training.phema_reconstruct import plan, reconstruct
from difflab.training.phema_snapshots import list_snapshots, read_snapshot

PHEMA = ["callbacks=[default,phema]", "callbacks.phema.every_n_steps=2"]


def train_run(run_dir: Path, max_steps: int, *extra: str) -> Path:
    train(compose_config("train", [*FAST_TRAIN, *PHEMA, f"trainer.max_steps={max_steps}", *extra], run_dir))
    return run_dir / "phema" / "snapshots"


def raw_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["current_model_state"]
    return {k[len("net.") :]: v.double() for k, v in state.items() if k.startswith("net.")}


def test_post_hoc_ema_is_off_by_default(tmp_path):
    cfg = compose_config("train", FAST_TRAIN, tmp_path)
    assert "phema" not in cfg.callbacks
    on = compose_config("train", PHEMA, tmp_path)
    assert list(on.callbacks.phema.sigma_rels) == [0.05, 0.10]
    assert "ema" in on.callbacks  # classic EMA stays on beside it


def test_snapshots_hold_the_power_function_ema_of_the_trained_weights(tmp_path):
    """Snapshots every 2 steps and at the end (step 5); each profile equals Σ_s w_s θ_s with the closed-form
    power-function weights w_s = (s/t)^(γ+1) − ((s−1)/t)^(γ+1) over the raw weights θ_s of every step."""
    run_dir = tmp_path / "run"
    folder = train_run(run_dir, 5, "callbacks.model_checkpoint.every_n_train_steps=1")
    snapshots = list_snapshots(folder)
    assert [s.step for s in snapshots] == [2, 4, 5]
    raw = [raw_weights(run_dir / "checkpoints" / f"step_{s:07d}.ckpt") for s in range(1, 6)]
    assert not torch.equal(raw[0]["conv_out.weight"], raw[-1]["conv_out.weight"]), "the weights must change"
    for snapshot in snapshots[1:]:
        stored = read_snapshot(snapshot.path)
        t = snapshot.step
        for sigma_rel, state in zip(stored["sigma_rels"], stored["states"], strict=True):
            g = sigma_rel_to_gamma(sigma_rel)
            weights = [(s / t) ** (g + 1) - ((s - 1) / t) ** (g + 1) for s in range(1, t + 1)]
            for key, value in state.items():
                expected = sum(w * r[key] for w, r in zip(weights, raw, strict=False))
                torch.testing.assert_close(value.double(), expected, atol=1e-6, rtol=1e-5, msg=key)
    assert not list(folder.glob(".*.tmp"))


def test_rewound_resume_sets_later_snapshots_aside_and_continues_exactly(tmp_path):
    """A run that reached step 4, resumed from its step-2 checkpoint and run to 6, writes the same snapshots as
    an uninterrupted 6-step run; the abandoned step-4 snapshot is kept, untouched, aside."""
    uninterrupted = train_run(tmp_path / "a", 6)
    run_dir = tmp_path / "b"
    folder = train_run(run_dir, 4)
    abandoned = (folder / "step_0000004.pt").read_bytes()
    train_run(run_dir, 6, f"ckpt_path={run_dir / 'checkpoints' / 'step_0000002.ckpt'}")
    assert [s.step for s in list_snapshots(folder)] == [2, 4, 6]
    assert (folder / "superseded_at_step_0000002" / "step_0000004.pt").read_bytes() == abandoned
    for step in (4, 6):
        want, got = (read_snapshot(f / f"step_{step:07d}.pt") for f in (uninterrupted, folder))
        for a, b in zip(want["states"], got["states"], strict=True):
            for key in a:
                torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=f"step {step}: {key}")


def test_a_rewound_resume_sets_aside_the_rebuilds_of_the_abandoned_steps(tmp_path):
    """Before, a sweep after the resume took the abandoned continuation's step-4 rebuild and its scores as its own
    ("scored before, kept") and a rebuild of the new step 4 said "already exists"."""
    run_dir = tmp_path / "run"
    train_run(run_dir, 4)
    phema = run_dir / "phema"
    for step in (2, 4):
        reconstruct(plan(run_dir, 0.07, step=step))
    (phema / "sigma_rel_0.070_step_0000004.metrics.json").write_text("{}")  # as a sweep leaves beside it
    abandoned = (phema / "sigma_rel_0.070_step_0000004.ckpt").read_bytes()
    train_run(run_dir, 4, f"ckpt_path={run_dir / 'checkpoints' / 'step_0000002.ckpt'}", "seed=7")
    aside = phema / "superseded_at_step_0000002"
    assert sorted(p.name for p in aside.iterdir()) == [
        "sigma_rel_0.070_step_0000004.ckpt",
        "sigma_rel_0.070_step_0000004.metrics.json",
    ]
    assert (aside / "sigma_rel_0.070_step_0000004.ckpt").read_bytes() == abandoned
    assert (phema / "sigma_rel_0.070_step_0000002.ckpt").is_file()  # of a step the resume keeps
    rebuilt = reconstruct(plan(run_dir, 0.07))  # the new step 4, no longer refused as existing
    assert rebuilt == phema / "sigma_rel_0.070_step_0000004.ckpt" and rebuilt.read_bytes() != abandoned


def test_bad_phema_settings_are_one_line_errors_before_anything_is_written(tmp_path):
    run_dir = tmp_path / "run"
    bad = "callbacks.phema.sigma_rels=[0.05,0.5]"
    result = run_cli("train.py", *FAST_TRAIN, *PHEMA, bad, f"hydra.run.dir={run_dir}")
    assert "sigma_rel=0.5 is out of range" in one_error_line(result)
    assert not (run_dir / "phema").exists() and not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sigma_rels": [0.05]}, "two or more different sigma_rels"),
        ({"sigma_rels": [0.05, 0.05]}, "two or more different sigma_rels"),
        ({"every_n_steps": 0}, "every_n_steps must be at least 1"),
        # Before, "'float' object is not iterable".
        ({"sigma_rels": 0.05}, r"sigma_rels must be a list, e.g. \[0.05,0.10\] \(got 0.05\)"),
    ],
)
def test_bad_phema_settings_are_refused(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message):
        PostHocEMA(tmp_path, **settings)


def rebuild_warnings(run_dir: Path, out: Path, caplog) -> list[str]:
    """The warnings of rebuilding σ_rel 0.07 of `run_dir` into `out`."""
    caplog.clear()
    with caplog.at_level("WARNING", logger="difflab"):
        reconstruct(plan(run_dir, 0.07, out=out))
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and not few_snapshots(r)]


def test_a_resume_with_another_every_n_steps_warns_of_no_missing_snapshots(tmp_path, caplog):
    """Snapshots every 2 steps to step 4, then every 3 to step 9 (6 and 9). Before, the rebuild checked every
    step against the last launch's 3 alone and warned that step 3's snapshot was missing; one really deleted
    (step 6) is still named, with the spacing each stretch of the run had."""
    run_dir = tmp_path / "run"
    folder = train_run(run_dir, 4)
    train_run(run_dir, 9, "ckpt_path=last", "callbacks.phema.every_n_steps=3")
    assert [s.step for s in list_snapshots(folder)] == [2, 4, 6, 9]
    assert rebuild_warnings(run_dir, tmp_path / "a.ckpt", caplog) == []
    (folder / "step_0000006.pt").unlink()
    assert rebuild_warnings(run_dir, tmp_path / "b.ckpt", caplog) == [
        f"the snapshots of step(s) 6 are missing from {folder} (every_n_steps=2 from step 0, 3 from step 4): "
        "sigma_rel=0.070 is fitted from the 3 left"
    ]


def test_a_run_resumed_from_a_checkpoint_older_than_the_spacing_record_is_still_checked_whole(
    tmp_path, caplog
):
    """Review of the record: a checkpoint written before it (no every_since) left the steps before the resume
    unchecked; they are taken at the resumed launch's spacing, as every step was before the record."""
    run_dir = tmp_path / "run"
    folder = train_run(run_dir, 4)
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    (state,) = [s for s in ckpt["callbacks"].values() if "every_since" in s]
    del state["every_since"]
    torch.save(ckpt, last)
    train_run(run_dir, 6, "ckpt_path=last")
    (folder / "step_0000002.pt").unlink()
    assert rebuild_warnings(run_dir, tmp_path / "a.ckpt", caplog) == [
        f"the snapshots of step(s) 2 are missing from {folder} (every_n_steps=2): sigma_rel=0.070 is fitted from "
        "the 2 left"
    ]


def test_too_few_snapshots_are_said_at_training_start_and_at_the_rebuild(tmp_path, caplog):
    # Before, every_n_steps past max_steps wrote one snapshot without a word, and sigma_rel=0.2 was rebuilt from it
    # 3% off a directly tracked 0.2 (0.02% from 20 snapshots), again without a word.
    run_dir = tmp_path / "run"
    overrides = [*FAST_TRAIN, "callbacks=[default,phema]", "trainer.max_steps=10"]
    with caplog.at_level("WARNING", logger="difflab"):
        train(compose_config("train", overrides, run_dir))
    assert (
        "callbacks.phema.every_n_steps=250 with trainer.max_steps=10 writes 1 post-hoc EMA snapshot(s): a rebuild "
        "from fewer than 10 is off by more than 0.5% of the weights' range; choose callbacks.phema.every_n_steps=1 "
        "or less"
    ) in [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="difflab"):
        reconstruct(plan(run_dir, 0.07, out=tmp_path / "a.ckpt"))
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [
        "sigma_rel=0.070 is rebuilt from 1 snapshot(s): fewer than 10 can be off by more than 0.5% of the weights' "
        "range; train with callbacks.phema.every_n_steps=1 or less to keep 10 by step 10"
    ]
    # A run limited by epochs alone is counted too: before, it was never warned of.
    caplog.clear()
    by_epochs = [*FAST_TRAIN, "callbacks=[default,phema]", "trainer.max_steps=-1", "trainer.max_epochs=1"]
    by_epochs += ["+trainer.limit_train_batches=6", "+trainer.limit_val_batches=1"]
    with caplog.at_level("WARNING", logger="difflab"):
        train(compose_config("train", by_epochs, tmp_path / "by_epochs"))
    said = [r.getMessage() for r in caplog.records if "post-hoc EMA snapshot(s)" in r.getMessage()]
    assert len(said) == 1 and "every_n_steps=250 with trainer.max_epochs=1 (6 steps)" in said[0], said


def test_a_sigma_rel_far_from_the_stored_profiles_is_said_to_be_rough_at_its_rebuild(tmp_path, caplog):
    # Before, sigma_rel=0.01 from snapshots of 0.05 and 0.10 was written without a word, its EMA profile fit 48% off.
    train_run(
        tmp_path / "run", 10, "callbacks.phema.every_n_steps=1", "callbacks.phema.sigma_rels=[0.05,0.1]"
    )

    def said(sigma_rel: float) -> list[str]:
        caplog.clear()
        with caplog.at_level("WARNING", logger="difflab"):
            reconstruct(plan(tmp_path / "run", sigma_rel, out=tmp_path / f"{sigma_rel}.ckpt"))
        return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    assert said(0.07) == []
    (rough,) = said(0.01)
    assert rough.startswith(
        "sigma_rel=0.010 lies far from the stored profiles (sigma_rel 0.05, 0.1): the snapshots fit its EMA profile "
        "only to within 4"
    ), rough
    assert "callbacks.phema.sigma_rels" in rough and (tmp_path / "0.01.ckpt").is_file()
