"""`python -m difflab.phema`: a tiny run's snapshots rebuilt into checkpoints that sample.py, evaluate.py and
difflab.load read; a sweep scored by FD that names the best; one-line refusals that write nothing."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, ROOT, compose_config, few_snapshots, one_error_line, run_cli

import difflab
from difflab.checkpoint import load_model
from difflab.cluster.stop_signal import StoppedBySignal
from difflab.phema import main
from difflab.run.train import train
from difflab.training.phema_reconstruct import plan
from difflab.training.phema_scores import done_before, record_sweep
from difflab.training.phema_snapshots import read_snapshot

SMALL_EVAL = ["n=8", "metrics.num_reference=40", "metrics.kid_subset_size=4", "metrics.kid_subsets=2"]


@pytest.fixture(scope="module")
def phema_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-step run of the toy model with snapshots at steps 2, 4 and 6 (read-only for the tests)."""
    run = tmp_path_factory.mktemp("phema") / "run"
    extra = ["callbacks=[default,phema]", "callbacks.phema.every_n_steps=2", "trainer.max_steps=6"]
    train(compose_config("train", [*FAST_TRAIN, *extra], run))
    return run


def net_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}


def test_a_tracked_sigma_rel_rebuilds_its_own_snapshot_and_loads_everywhere(phema_run, tmp_path, capsys):
    out = tmp_path / "tracked.ckpt"
    assert main([str(phema_run), "sigma_rel=0.10", f"out={out}"]) == 0
    assert str(out) in capsys.readouterr().out
    snapshot = read_snapshot(phema_run / "phema" / "snapshots" / "step_0000006.pt")
    rebuilt = net_weights(out)
    assert rebuilt.keys() == snapshot["states"][1].keys()
    for key, value in snapshot["states"][1].items():
        torch.testing.assert_close(rebuilt[key], value, msg=key)
    loaded = load_model(out)
    assert (loaded.weights, loaded.global_step) == ("post-hoc EMA sigma_rel=0.100", 6)
    images = difflab.load(out).sample(2, steps=2, seed=0)
    assert len(images) == 2  # uint8 images (pipe.sample checks they are finite)


def test_any_sigma_rel_becomes_a_checkpoint_sample_py_reads(phema_run, tmp_path, capsys):
    assert main([str(phema_run), "sigma_rel=0.07", f"out={tmp_path / 'mid.ckpt'}"]) == 0
    mid, short, long = (
        net_weights(tmp_path / "mid.ckpt"),
        *(read_snapshot(phema_run / "phema" / "snapshots" / "step_0000006.pt")["states"]),
    )
    assert not torch.equal(mid["conv_out.weight"], short["conv_out.weight"])
    assert not torch.equal(mid["conv_out.weight"], long["conv_out.weight"])
    result = run_cli(
        "sample.py", f"ckpt={tmp_path / 'mid.ckpt'}", "n=2", "sampler.steps=2", f"out={tmp_path / 'samples'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    settings = json.loads((tmp_path / "samples" / "settings.json").read_text())
    assert settings["weights"] == "post-hoc EMA sigma_rel=0.070"


def test_a_sweep_scores_every_sigma_rel_and_names_the_best(phema_run, tmp_path, capsys):
    out = tmp_path / "sweep"
    cache = f"metrics.cache_dir={tmp_path / 'cache'}"
    assert main([str(phema_run), "sigma_rel=[0.05,0.15]", f"out={out}", *SMALL_EVAL, cache]) == 0
    printed = capsys.readouterr().out
    scores = {
        s: json.loads((out / f"sigma_rel_{s}_step_0000006.metrics.json").read_text())["metrics"]["fd_effl0"]
        for s in ("0.050", "0.150")
    }
    best = min(scores, key=scores.get)
    assert f"best: sigma_rel={best} (fd_effl0 {scores[best]:.4f})" in printed
    for s, score in scores.items():
        assert f"{float(s):9.3f}  {score:10.4f}" in printed
        assert (out / f"sigma_rel_{s}_step_0000006.ckpt").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sigma_rel=0.5"], "sigma_rel=0.5 is out of range"),
        # Before, "<= 0.28868": the refused value itself, as its bound (1/sqrt(12) rounded up).
        (["sigma_rel=0.28868"], "0 < sigma_rel <= 0.288675 (1/sqrt(12)"),
        (["sigma_rel=abc"], "sigma_rel=abc is not a number"),
        (["sigma_rel=0.05", "step=3"], "step=3 is not a snapshot step"),
        (["sigma_rel=0.05", "n=10"], "only a sweep scores"),
        (["sigma_rel=[0.05,0.050]"], "lists a value twice"),
        # Before, "only a sweep scores (sigma_rel=[…])", as if an evaluate.py override had been given.
        (["sigma_rel=0.05", "stepp=6"], "stepp is not a key of python -m difflab.phema; did you mean step?"),
        (
            ["sigma_rel=[0.05,0.1]", "sigma=0.1"],
            "sigma is not a key of python -m difflab.phema; did you mean sigma_rel?",
        ),
        (["sigma_rel=[0.05,0.3]"], "sigma_rel=0.3 is out of range"),
        (["sigma_rel=[0.05,0.1]", "metrics.extractr=x"], "did you mean metrics.extractor"),
        # Before, each was met by the first evaluate.py, after a rebuild and a record the corrected command refused.
        (["sigma_rel=[0.05,0.1]", "n=abc"], "n='abc' is not a whole number"),
        (["sigma_rel=[0.05,0.1]", "sampler.steps=0"], "sampler.steps=0 must be at least 1"),
        # Before, taken and not read: the sweep scored the rebuilds and said nothing.
        (["sigma_rel=[0.05,0.1]", "ckpt=other.ckpt"], "a sweep scores the rebuilds of the run given first"),
        # Before, refused by the first evaluate.py, after a rebuild and a record the corrected command refused.
        (
            ["sigma_rel=[0.05,0.1]", "autoencoder=ae"],
            "is not a latent diffusion model (it makes pixels): drop",
        ),
        # Before, dropped: the rebuild recorded the path the run had (review).
        (["sigma_rel=0.05", "autoencoder="], "autoencoder= is empty: give the moved autoencoder's"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(phema_run, tmp_path, capsys, args, message):
    before = sorted(p.name for p in (phema_run / "phema").iterdir())
    assert main([str(phema_run), *args, f"out={tmp_path / 'x'}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert sorted(p.name for p in (phema_run / "phema").iterdir()) == before
    assert not (tmp_path / "x").exists()


def test_close_sigma_rels_get_files_of_their_own_and_a_file_is_not_a_run(phema_run, tmp_path, capsys):
    # Before, 0.0701 was named sigma_rel_0.070_… (as 0.070: "already exists"), and a checkpoint file given as the
    # run was "run folder not found" although it exists.
    run = tmp_path / "run"
    shutil.copytree(phema_run, run)
    assert main([str(run), "sigma_rel=0.07"]) == 0
    assert main([str(run), "sigma_rel=0.0701"]) == 0
    assert sorted(p.name for p in (run / "phema").glob("*.ckpt")) == [
        "sigma_rel_0.0701_step_0000006.ckpt",
        "sigma_rel_0.070_step_0000006.ckpt",
    ]
    capsys.readouterr()
    last = phema_run / "checkpoints" / "last.ckpt"
    assert main([str(last), "sigma_rel=0.07"]) == 2
    assert (
        capsys.readouterr().err.strip()
        == f"error: {last} is a file: give the run folder that holds phema/snapshots/"
    )


def test_a_missing_snapshot_is_named(phema_run, tmp_path, caplog):
    # Before, a run with step 4's snapshot deleted was rebuilt from the two left without a word.
    run = tmp_path / "run"
    shutil.copytree(phema_run, run)
    (run / "phema" / "snapshots" / "step_0000004.pt").unlink()
    with caplog.at_level("WARNING", logger="difflab"):
        assert main([str(run), "sigma_rel=0.07"]) == 0
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and not few_snapshots(r)] == [
        f"the snapshots of step(s) 4 are missing from {run / 'phema' / 'snapshots'} (every_n_steps=2): "
        "sigma_rel=0.070 is fitted from the 2 left"
    ]
    caplog.clear()
    with caplog.at_level("WARNING", logger="difflab"):
        assert main([str(phema_run), "sigma_rel=0.07", f"out={tmp_path / 'whole.ckpt'}"]) == 0
    assert not [
        r for r in caplog.records if r.levelname == "WARNING" and not few_snapshots(r)
    ]  # every snapshot there: no word


@pytest.mark.parametrize("damage", ["text", "cut short"])
def test_a_damaged_snapshot_is_named_with_what_is_wrong(phema_run, tmp_path, capsys, damage):
    """Before, torch's own words: "105" for a text file, "[Errno 22] Invalid argument" for a file cut short."""
    run = tmp_path / "run"
    shutil.copytree(phema_run, run)
    snapshot = run / "phema" / "snapshots" / "step_0000004.pt"
    if damage == "text":
        snapshot.write_text("it was a note")
    else:
        snapshot.write_bytes(snapshot.read_bytes()[:1000])
    assert main([str(run), "sigma_rel=0.07"]) == 2
    expected = (
        "the file is damaged or cut short" if damage == "cut short" else "it is not a PyTorch checkpoint file"
    )
    assert capsys.readouterr().err.startswith(
        f"error: could not read post-hoc EMA snapshot {snapshot}: {expected}"
    )


def test_a_rebuild_of_the_latest_snapshot_says_when_the_run_trained_past_it(phema_run, tmp_path, caplog):
    # Before, a run whose final snapshot (step 6) was gone was rebuilt at step 4 without a word.
    run = tmp_path / "run"
    shutil.copytree(phema_run, run)
    (run / "phema" / "snapshots" / "step_0000006.pt").unlink()
    with caplog.at_level("WARNING", logger="difflab"):
        assert main([str(run), "sigma_rel=0.07"]) == 0
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and not few_snapshots(r)] == [
        f"{run} trained to step 6 but its latest snapshot is of step 4: sigma_rel=0.070 is rebuilt at step 4"
    ]
    assert (run / "phema" / "sigma_rel_0.070_step_0000004.ckpt").is_file()
    caplog.clear()
    with caplog.at_level("WARNING", logger="difflab"):  # a step asked for is what the user wants
        assert main([str(phema_run), "sigma_rel=0.07", "step=4", f"out={tmp_path / 'four.ckpt'}"]) == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING" and not few_snapshots(r)]


def test_an_existing_output_is_never_overwritten(phema_run, tmp_path, capsys):
    out = tmp_path / "taken.ckpt"
    out.write_bytes(b"mine")
    assert main([str(phema_run), "sigma_rel=0.05", f"out={out}"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert out.read_bytes() == b"mine"


def test_a_run_without_snapshots_is_refused_from_the_command_line(tiny_ckpt):
    """The real command line: exit 2, one `error:` line, no traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "difflab.phema", str(tiny_ckpt.parent.parent), "sigma_rel=0.05"],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "has no post-hoc EMA snapshots" in one_error_line(result)
    assert "callbacks=[default,phema]" in one_error_line(result)


def test_a_sweep_stopped_midway_continues_where_it_stopped(phema_run, tmp_path, capsys, caplog):
    """A stop leaves whole files only (each is written atomically): a sigma_rel scored, one rebuilt but not yet
    scored, one not begun. The same command again keeps the first, scores the second, makes the third."""
    out = tmp_path / "sweep"
    command = [str(phema_run), "sigma_rel=[0.05,0.1,0.15]", f"out={out}", *SMALL_EVAL]
    command.append(f"metrics.cache_dir={tmp_path / 'cache'}")
    assert main(command) == 0
    name = "sigma_rel_{}_step_0000006"
    whole = {p.name: p.read_bytes() for p in out.iterdir()}
    (out / f"{name.format('0.100')}.metrics.json").unlink()  # stopped while scoring 0.1
    for p in out.glob(f"{name.format('0.150')}*"):  # not begun
        p.unlink()
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="difflab"):
        assert main(command) == 0
    printed = capsys.readouterr().out
    assert f"sigma_rel=0.050: scored before, kept ({out / name.format('0.050')}.metrics.json)" in caplog.text
    assert f"sigma_rel=0.100: rebuilt before, kept ({out / name.format('0.100')}.ckpt)" in caplog.text
    again = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(again) == sorted(whole)
    for s in ("0.050", "0.100", "0.150"):  # what a run never stopped writes: the same weights and scores
        assert again[f"{name.format(s)}.ckpt"] == whole[f"{name.format(s)}.ckpt"]
        report = json.loads(again[f"{name.format(s)}.metrics.json"])["metrics"]
        assert report == json.loads(whole[f"{name.format(s)}.metrics.json"])["metrics"]
    assert "best: sigma_rel=" in printed


def test_a_sweep_continued_with_other_evaluate_settings_is_refused(phema_run, tmp_path, capsys):
    out = tmp_path / "sweep"
    cache = f"metrics.cache_dir={tmp_path / 'cache'}"
    assert main([str(phema_run), "sigma_rel=[0.05,0.15]", f"out={out}", *SMALL_EVAL, cache]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    other = [a if not a.startswith("n=") else "n=16" for a in SMALL_EVAL]
    assert main([str(phema_run), "sigma_rel=[0.05,0.15]", f"out={out}", *other, cache]) == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith(
        f"error: {out / 'sigma_rel_0.050_step_0000006.ckpt'} was made by a sweep with other evaluate.py "
    )
    assert "n=8" in line and "n=16" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_sweep_continued_with_its_evaluate_settings_in_another_order_is_continued(
    phema_run, tmp_path, capsys, caplog
):
    out = tmp_path / "sweep"
    cache = f"metrics.cache_dir={tmp_path / 'cache'}"
    assert main([str(phema_run), "sigma_rel=[0.05]", f"out={out}", *SMALL_EVAL, cache]) == 0
    with caplog.at_level(logging.INFO, logger="difflab"):
        assert main([str(phema_run), "sigma_rel=[0.05]", f"out={out}", cache, *reversed(SMALL_EVAL)]) == 0
    assert "sigma_rel=0.050: scored before, kept" in caplog.text


def test_a_key_given_twice_is_compared_in_its_order(tmp_path):
    from difflab.training.phema_scores import same_overrides

    assert same_overrides(["n=8", "seed=1"], ["seed=1", "n=8"])
    assert not same_overrides(["n=8", "n=16"], ["n=16", "n=8"])  # the last one given wins
    assert not same_overrides(["n=8"], ["n=8", "seed=1"])


def test_a_stopped_sweep_is_one_line_that_says_the_same_command_continues(
    phema_run, tmp_path, capsys, monkeypatch
):
    # A cluster's SIGTERM in the middle of a sweep (Ctrl-C takes the same path, as sample.py's tests show): before,
    # a traceback, or for SIGTERM no word at all (exit -15).
    def stopped(*args, **kwargs):
        raise StoppedBySignal(15)

    monkeypatch.setattr("difflab.run.phema.sweep", stopped)
    with pytest.raises(SystemExit) as ended:
        main([str(phema_run), "sigma_rel=[0.05,0.1]", f"out={tmp_path / 'sweep'}", *SMALL_EVAL])
    assert ended.value.code == 143
    assert capsys.readouterr().err.splitlines() == [
        "error: python -m difflab.phema stopped by SIGTERM; each sigma_rel it had finished is kept (its checkpoint "
        "and scores are written whole): the same command continues the sweep"
    ]


def test_evaluate_py_on_a_rebuild_in_its_run_reports_into_that_run(phema_run, tmp_path, monkeypatch):
    """Before, into outputs/evaluate/ below whatever folder evaluate.py was started from."""
    from difflab.run.evaluate import evaluate

    run = tmp_path / "run"
    shutil.copytree(phema_run, run)
    assert main([str(run), "sigma_rel=0.07"]) == 0
    monkeypatch.chdir(tmp_path)
    rebuilt = run / "phema" / "sigma_rel_0.070_step_0000006.ckpt"
    overrides = [f"ckpt={rebuilt}", *SMALL_EVAL, "sampler.steps=2", f"metrics.cache_dir={tmp_path / 'cache'}"]
    report = evaluate(compose_config("eval", overrides, tmp_path / "eval"))
    assert json.loads((run / "metrics.json").read_text()) == report
    assert report["generated"]["weights"] == "post-hoc EMA sigma_rel=0.070"
    assert not (tmp_path / "outputs").exists()


def test_several_processes_are_refused_before_anything_is_written(phema_run, tmp_path, capsys, monkeypatch):
    """Before, two torchrun ranks raced to write the same rebuild: "[Errno 17] File exists"."""
    for name, value in {
        "WORLD_SIZE": "2",
        "RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500",
    }.items():
        monkeypatch.setenv(name, value)
    assert main([str(phema_run), "sigma_rel=0.07", f"out={tmp_path / 'x.ckpt'}"]) == 2
    assert capsys.readouterr().err == (
        "error: python -m difflab.phema runs as one process: start it without torchrun or srun\n"
    )
    assert not (tmp_path / "x.ckpt").exists()


def test_a_sweep_continues_with_autoencoder_given_or_dropped(phema_run, tmp_path):
    # Before, a sweep's record compared autoencoder= too: a sweep continued with the moved autoencoder (whose hash
    # must match, so the scores cannot change) was refused as made "with other evaluate.py overrides".
    p = plan(phema_run, 0.05, folder=tmp_path, existing=True)
    record_sweep(p, ["n=8"])
    assert done_before(p, ["n=8", "autoencoder=/moved/ae"]) is None
    record_sweep(q := plan(phema_run, 0.15, folder=tmp_path, existing=True), ["autoencoder=/old/ae", "n=8"])
    assert done_before(q, ["n=8"]) is None
    with pytest.raises(ValueError, match="was made by a sweep with other evaluate.py overrides"):
        done_before(p, ["n=9", "autoencoder=/moved/ae"])


@pytest.mark.parametrize(
    ("sigma_rel", "where"), [("0.08", "checkpoints/new.ckpt"), ("[0.05,0.1]", "checkpoints")]
)
def test_a_rebuild_is_refused_inside_checkpoints(phema_run, tmp_path, capsys, sigma_rel, where):
    # Before, out=<run>/checkpoints/new.ckpt was written there, though a resume reads that folder.
    run = tmp_path / "run"
    shutil.copytree(phema_run, run)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    scoring = SMALL_EVAL if sigma_rel.startswith("[") else []  # a sweep's evaluate.py overrides
    assert main([str(run), f"sigma_rel={sigma_rel}", f"out={run / where}", *scoring]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: out={run / where} is inside {run / 'checkpoints'}, which a resume reads: leave out= out (the "
        f"rebuild goes to {run / 'phema'}) or give a file outside checkpoints/"
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
