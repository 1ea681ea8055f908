"""A resume that cannot work gets one clear line, and nothing in the run folder changes."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import (
    CLI_FAST,
    FAST_TRAIN,
    ROOT,
    compose_config,
    one_error_line,
    overwritten_in_its_middle,
    run_cli,
)
from omegaconf import OmegaConf


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under folder with its bytes: what a refused command must leave as it was."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_resume_keeps_its_conditioning_and_names_a_changed_super_resolution_factor(tmp_path, caplog):
    """Before, data.condition=null on a text run was dropped without a word and replayed by later resumes, and a
    4x super-resolution run resumed with data.sr_factor=2 trained on as a 2x one without a word."""
    from difflab.runs.resume import check_condition_kept, warn_if_conditioning_changed

    path = tmp_path / "last.ckpt"
    text = {"data": {"condition": "text"}}
    check_condition_kept(["seed=1"], text, path)
    check_condition_kept(["data.condition=text"], text, path)
    with pytest.raises(
        ValueError, match=r"^data.condition=null but checkpoint .* was trained with data.condition=text"
    ):
        check_condition_kept(["data.condition=null"], text, path)
    superres = {"data": {"condition": "superres", "sr_factor": 4, "sr_noise": 0.0}}
    with caplog.at_level("WARNING", logger="difflab"):
        warn_if_conditioning_changed({"data.sr_factor": 4, "data.sr_noise": 0.0}, superres, 80)
        assert not caplog.records
        warn_if_conditioning_changed({"data.sr_factor": 2, "data.sr_noise": 0.0}, superres, 80)
    assert "the conditioning differs from the checkpoint's: data.sr_factor=2 (checkpoint: 4)" in caplog.text


def test_an_autoencoder_resumed_by_a_diffusion_recipe_says_what_it_is(tmp_path):
    """Before, a list of the two configs' differences: "model._target_=difflab.models.UNet (checkpoint: …)"."""
    from difflab.runs.resume import check_task_kept

    path = tmp_path / "last.ckpt"
    check_task_kept("autoencoder", {"task": "autoencoder"}, path)
    check_task_kept(None, {"model": {}}, path)
    with pytest.raises(
        ValueError, match=rf"^checkpoint {path} is an autoencoder \(task=autoencoder\), not a "
    ):
        check_task_kept(None, {"task": "autoencoder"}, path)
    with pytest.raises(ValueError, match=rf"^checkpoint {path} is a diffusion model, not an autoencoder"):
        check_task_kept("autoencoder", {"model": {}}, path)


@pytest.mark.parametrize("trainer", ["trainer=cpu", "trainer=ddp"])
def test_a_sharded_checkpoint_resumed_by_another_strategy_is_one_line_before_anything_is_written(
    tmp_path, trainer
):
    # Before: IsADirectoryError once the processes had started, the new run folder left claimed.
    from difflab.run.prepare import prepare

    shards = tmp_path / "step_0000004.ckpt"
    shards.mkdir()
    (shards / ".metadata").write_bytes(b"")
    (shards / "meta.pt").write_bytes(b"")
    cfg = compose_config("train", [*FAST_TRAIN, trainer, f"ckpt_path={shards}"], tmp_path / "run")
    with pytest.raises(ValueError) as error:
        prepare(cfg, tmp_path / "run")
    assert str(error.value) == (
        f"checkpoint {shards} is sharded (a folder of per-rank shards), which only trainer=fsdp resumes: resume with "
        f"trainer=fsdp, or put it together first (python -m difflab.consolidate {shards}) and resume from "
        f"{tmp_path / 'step_0000004.full.ckpt'}"
    )
    assert not (tmp_path / "run").exists()


def test_a_checkpoint_overwritten_in_its_middle_is_refused_not_trained_over(tiny_ckpt, tmp_path):
    """Before, only a file cut short was caught: bytes overwritten inside a tensor were loaded and trained over."""
    from difflab.runs.resume import read_resumable

    damaged = overwritten_in_its_middle(tiny_ckpt, tmp_path / "last.ckpt")
    with pytest.raises(
        ValueError, match=rf"^could not read checkpoint {damaged}: the file is damaged \(.* fails"
    ):
        read_resumable(damaged, set())
    assert read_resumable(tiny_ckpt, set())["global_step"] == 2  # a whole one is read as before


def test_ckpt_path_last_without_last_ckpt_names_the_runs_other_checkpoints(tmp_path):
    """Before, "pass hydra.run.dir=<the run folder to resume>", the folder the command had just given."""
    from difflab.runs.resume import resume_path

    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="pass hydra.run.dir=<the run folder to resume>"):
        resume_path("last", tmp_path / "run")
    for step in (10, 20):
        torch.save({"global_step": step}, checkpoints / f"step_{step:07d}.ckpt")
    with pytest.raises(FileNotFoundError) as error:
        resume_path("last", tmp_path / "run")
    assert str(error.value).endswith(f"e.g. ckpt_path={checkpoints / 'step_0000020.ckpt'}")


def test_a_resume_at_the_step_limit_says_it_trains_nothing(caplog):
    # Before, Lightning's "`Trainer.fit` stopped: `max_steps=100` reached" and rc 0 were the only hint.
    from difflab.runs.resume import warn_if_at_the_step_limit

    with caplog.at_level("WARNING", logger="difflab"):
        warn_if_at_the_step_limit(100, 200)
        assert not caplog.records
        warn_if_at_the_step_limit(100, 100)
    assert caplog.records[0].getMessage() == (
        "the checkpoint is at trainer.max_steps=100: nothing is left to train, only the final sample grid and "
        "scores run again; give trainer.max_steps above 100 to train on"
    )


@pytest.mark.slow
def test_a_resume_at_the_step_limit_makes_the_final_grid_a_stop_left_unmade(cli_run, tmp_path):
    # A stop while the final grid or FID ran ends with "saved last.ckpt at step N: resume with ckpt_path=last".
    # Before, that resume ended rc 0 at once (Lightning skips a fit already at its limit): no final.png, ever.
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    made = (run / "samples" / "final.png").read_bytes()
    (run / "samples" / "final.png").unlink()
    result = run_cli("train.py", f"hydra.run.dir={run}", "ckpt_path=last")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / "samples" / "final.png").read_bytes() == made
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["model=unet_small"], ["model.base_channels=32 (checkpoint: 16)"]),
        (
            ["data.channels=3", "prediction_type=v", "schedule=cosine", "optim.lr=0.01"],
            [
                "data.channels=3 (checkpoint: 1)",
                "prediction_type=v (checkpoint: epsilon)",
                "schedule.name=cosine (checkpoint: linear)",
                "optim.lr=0.01 (checkpoint: 0.0002)",
            ],
        ),
    ],
    ids=["model-size", "channels-prediction-schedule-lr"],
)
def test_resume_that_contradicts_the_checkpoint_is_refused_before_anything_is_written(
    cli_run, overrides, named
):
    before = snapshot(cli_run)
    line = one_error_line(
        run_cli("train.py", *CLI_FAST, f"hydra.run.dir={cli_run}", "ckpt_path=last", *overrides)
    )
    assert line.startswith(
        f"error: the config contradicts checkpoint {cli_run / 'checkpoints' / 'last.ckpt'}"
    )
    for item in named:
        assert item in line
    assert snapshot(cli_run) == before


@pytest.mark.slow
def test_a_resume_keeps_the_runs_own_hydra_files(cli_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    first = (run / ".hydra" / "config.yaml").read_text()
    result = run_cli("train.py", *CLI_FAST, "trainer.max_steps=3", f"hydra.run.dir={run}", "ckpt_path=last")
    assert result.returncode == 0, result.stderr[-2000:]
    assert (run / ".hydra" / "config.yaml").read_text() == first
    resumed = OmegaConf.load(run / ".hydra" / "resumed_step_0000002" / "config.yaml")
    assert resumed.trainer.max_steps == 3 and resumed.ckpt_path == "last"


@pytest.mark.slow
def test_resume_reuses_the_runs_own_overrides(cli_run, tmp_path):
    """`ckpt_path=last hydra.run.dir=<run>` is enough: the run was made with unet_tiny, csv off, … (CLI_FAST)."""
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    result = run_cli("train.py", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "resuming with the run's own overrides: model=unet_tiny" in result.stdout
    assert "trainer.max_steps=2" not in result.stdout  # the one given now wins
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 3
    assert not (run / "checkpoints" / "last-v1.ckpt").exists()  # a moved folder keeps its own last.ckpt


def test_ckpt_path_last_without_a_checkpoint_names_where_it_looked(tmp_path):
    run = tmp_path / "run"
    line = one_error_line(run_cli("train.py", *CLI_FAST, f"hydra.run.dir={run}", "ckpt_path=last"))
    assert line == (
        f"error: ckpt_path=last: no checkpoint at {run / 'checkpoints' / 'last.ckpt'}; pass "
        "hydra.run.dir=<the run folder to resume> or ckpt_path=<checkpoint file>"
    )
    assert not run.exists()


def test_a_run_folder_given_as_ckpt_path_names_both_ways_to_go_on(tmp_path):
    earlier = tmp_path / "earlier"
    (earlier / "checkpoints").mkdir(parents=True)
    (earlier / "checkpoints" / "last.ckpt").write_bytes(b"a checkpoint")
    before = snapshot(earlier)
    run = tmp_path / "run"
    line = one_error_line(run_cli("train.py", *CLI_FAST, f"hydra.run.dir={run}", f"ckpt_path={earlier}"))
    assert line == (
        f"error: ckpt_path={earlier} is a run folder: continue it with hydra.run.dir={earlier} ckpt_path=last, "
        f"or start a new run from it with ckpt_path={earlier / 'checkpoints' / 'last.ckpt'}"
    )
    assert snapshot(earlier) == before and not run.exists()


def test_the_way_to_go_on_that_a_line_names_can_be_pasted_for_a_folder_with_a_space_and_a_comma(
    cli_run, tmp_path
):
    """Before, 'continue it with hydra.run.dir=/x/my runs,v2 ckpt_path=last' pasted into a shell gave Hydra two
    words, and Hydra reads a comma as a sweep: the resume started elsewhere or was refused."""
    earlier = tmp_path / "my runs,v2"
    shutil.copytree(cli_run, earlier)
    new = tmp_path / "new"
    line = one_error_line(run_cli("train.py", *CLI_FAST, f'ckpt_path="{earlier}"', f"hydra.run.dir={new}"))
    pasted = line.split("continue it with ")[1].split(", or start")[0]
    resumed = run_cli("train.py", *CLI_FAST, "trainer.max_steps=3", *shlex.split(pasted))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert torch.load(earlier / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert not new.exists()


@pytest.mark.parametrize("lost", ["meta.pt", ".metadata"])
def test_a_sharded_folder_missing_a_file_says_which_whether_given_or_last(tmp_path, lost):
    from difflab.runs.resume import resume_path

    run = tmp_path / "run"
    shards = run / "checkpoints" / "last.ckpt"
    shards.mkdir(parents=True)
    for name in ({"meta.pt", ".metadata"} - {lost}) | {"__0_0.distcp"}:
        (shards / name).write_bytes(b"x")
    with pytest.raises(FileNotFoundError) as given:
        resume_path(str(shards), tmp_path / "new")
    assert str(given.value) == f"{shards} is not a whole sharded checkpoint: it has no {lost}"
    with pytest.raises(FileNotFoundError) as last:
        resume_path("last", run)
    assert str(last.value) == f"ckpt_path=last: {shards} is not a whole sharded checkpoint: it has no {lost}"


def test_a_requeued_job_refuses_a_damaged_last_checkpoint_instead_of_starting_over(tmp_path, monkeypatch):
    from difflab.runs.resume import resume_path

    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    run = tmp_path / "run"
    assert resume_path(None, run) is None  # requeued before its first checkpoint: a fresh start
    shards = run / "checkpoints" / "last.ckpt"
    shards.mkdir(parents=True)
    (shards / ".metadata").write_bytes(b"x")
    with pytest.raises(FileNotFoundError) as error:
        resume_path(None, run)
    assert str(error.value) == (
        f"this requeued job cannot resume: {shards} is not a whole sharded checkpoint: it has no meta.pt; "
        "pass ckpt_path=<an earlier checkpoint of the run>"
    )
    (shards / "meta.pt").write_bytes(b"x")
    assert resume_path(None, run) == shards


def test_an_exported_model_folder_given_as_ckpt_path_is_named_as_weights_only(tmp_path):
    from difflab.runs.resume import resume_path

    exported = tmp_path / "exported"
    exported.mkdir()
    (exported / "difflab_config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"is an exported model folder \(weights only\)"):
        resume_path(str(exported), tmp_path / "run")
    pipeline = (
        tmp_path / "pipeline"
    )  # export.py format=diffusers; before: "is not a whole sharded checkpoint"
    pipeline.mkdir()
    (pipeline / "model_index.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"is an exported model folder \(weights only\)"):
        resume_path(str(pipeline), tmp_path / "run")


@pytest.mark.parametrize("given", ["diffusers unet", "diffusers pipeline", "pictures", "empty"])
def test_a_folder_that_is_no_checkpoint_given_as_ckpt_path_is_named_as_what_it_is(tmp_path, given):
    # Before, each: "<folder> is not a whole sharded checkpoint: it has no .metadata or meta.pt" (helper report).
    from PIL import Image

    from difflab.runs.resume import resume_path

    folder = tmp_path / given.replace(" ", "_")
    if given.startswith("diffusers"):
        diffusers = pytest.importorskip("diffusers")
        tiny = {"sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": (16, 32),
                "layers_per_block": 1, "norm_num_groups": 8, "down_block_types": ("DownBlock2D",) * 2,
                "up_block_types": ("UpBlock2D",) * 2}  # fmt: skip
        if given == "diffusers unet":
            diffusers.UNet2DModel(**tiny).save_pretrained(folder)
        else:  # a pipeline of a network difflab does not load, without model_index.json
            tiny["down_block_types"] = ("DownBlock2D", "CrossAttnDownBlock2D")
            tiny["up_block_types"] = ("CrossAttnUpBlock2D", "UpBlock2D")
            unet = diffusers.UNet2DConditionModel(**tiny, cross_attention_dim=8, attention_head_dim=2)
            unet.save_pretrained(folder / "unet")
            diffusers.DDPMScheduler().save_pretrained(folder / "scheduler")
    else:
        folder.mkdir()
        if given == "pictures":
            for i in range(2):
                Image.new("L", (8, 8)).save(folder / f"{i}.png")
    held = {
        "diffusers unet": "a diffusers UNet2DModel folder (weights only)",
        "diffusers pipeline": "a diffusers pipeline folder (weights only)",
        "pictures": "a folder of images (2, e.g. 0.png)",
        "empty": "an empty folder",
    }[given]
    start = f"; start a new run from its weights with init_from={folder}" if given == "diffusers unet" else ""
    with pytest.raises(FileNotFoundError) as raised:
        resume_path(str(folder), tmp_path / "run")
    assert str(raised.value) == (
        f"ckpt_path={folder} is {held}, not a training checkpoint: a run resumes from one (checkpoints/*.ckpt of "
        f"its run folder){start}"
    )


@pytest.mark.slow
def test_corrupt_checkpoint_on_resume_is_one_line_and_nothing_is_written(cli_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])  # cut short, as a kill during the write would leave it
    before = snapshot(run)
    line = one_error_line(run_cli("train.py", *CLI_FAST, f"hydra.run.dir={run}", "ckpt_path=last"))
    assert line.startswith(f"error: could not read checkpoint {last}")
    # The periodic checkpoint beside it is named (before, nothing said one was there).
    assert line.endswith(
        f"; resume from an earlier checkpoint of the run, e.g. ckpt_path={run / 'checkpoints' / 'step_0000002.ckpt'}"
    )
    assert snapshot(run) == before


@pytest.mark.slow
def test_a_checkpoints_folder_or_a_capitalised_last_names_what_was_meant(cli_run, tmp_path):
    folder = cli_run / "checkpoints"
    line = one_error_line(
        run_cli("train.py", *CLI_FAST, f"hydra.run.dir={tmp_path / 'a'}", f"ckpt_path={folder}")
    )
    # Before: "… is not a whole sharded checkpoint: it has no .metadata or meta.pt".
    assert line == (
        f"error: ckpt_path={folder} is a folder of checkpoints: give one of them (ckpt_path={folder / 'last.ckpt'}), "
        f"or continue its run with hydra.run.dir={cli_run} ckpt_path=last"
    )
    line = one_error_line(run_cli("train.py", *CLI_FAST, f"hydra.run.dir={tmp_path / 'b'}", "ckpt_path=Last"))
    assert line == "error: checkpoint not found: Last; did you mean ckpt_path=last?"  # before: no hint
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_a_resume_without_the_ema_it_was_trained_with_is_refused(cli_run, tmp_path):
    # Before, callbacks.ema=null trained on from the checkpoint's EMA weights (its state_dict), not the trained ones.
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    before = snapshot(run)
    line = one_error_line(
        run_cli("train.py", *CLI_FAST, f"hydra.run.dir={run}", "ckpt_path=last", "callbacks.ema=null")
    )
    assert line == (
        f"error: checkpoint {run / 'checkpoints' / 'last.ckpt'} was trained with EMA: resumed without callbacks.ema, "
        "training would go on from the EMA weights instead of the trained ones; keep callbacks.ema on a resume (it "
        "may change its decay)"
    )
    assert snapshot(run) == before


@pytest.mark.slow
def test_resuming_a_checkpoint_into_another_runs_folder_is_refused(cli_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(cli_run, other)
    before = snapshot(other)
    ckpt = cli_run / "checkpoints" / "last.ckpt"
    line = one_error_line(run_cli("train.py", *CLI_FAST, f"hydra.run.dir={other}", f"ckpt_path={ckpt}"))
    assert f"run folder {other} already holds another run" in line
    assert f"hydra.run.dir={cli_run}" in line
    assert snapshot(other) == before


@pytest.mark.slow
def test_a_resume_from_past_the_step_limit_is_refused_not_a_silent_no_op(cli_run, tmp_path):
    # Before, Lightning ended at once with rc 0, having trained nothing (how a resume that went back to an earlier
    # launch's trainer.max_steps looked).
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    before = snapshot(run)
    line = one_error_line(
        run_cli("train.py", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=1")
    )
    assert line == (
        f"error: checkpoint {run / 'checkpoints' / 'last.ckpt'} is at step 2, past trainer.max_steps=1: nothing "
        "is left to train; give trainer.max_steps above 2 to train on"
    )
    assert snapshot(run) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "named", "lr_at_step_2"),
    [
        (["lr_scheduler.warmup_steps=50"], "lr_scheduler.warmup_steps=50 (checkpoint: 200)", 2e-4 * 3 / 50),
        (["lr_scheduler=warmup_cosine"], "lr_scheduler=warmup_cosine (checkpoint: warmup)", 2e-4 * 3 / 200),
        (["lr_scheduler=none"], "lr_scheduler=none (checkpoint: warmup)", 2e-4),
    ],
)
def test_a_resume_that_changes_the_lr_schedule_says_so_and_follows_it(
    cli_run, tmp_path, overrides, named, lr_at_step_2
):
    # Before, without a word: a cosine whose total_steps follows trainer.max_steps, extended, jumps from an LR
    # of about 0 back up at the resumed step. Then its first step still took the old schedule's LR (restored with
    # the optimizer), and with lr_scheduler=none every step did: the warm-up's 3/200 of optim.lr, for good.
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    said, lr = lr_of_one_more_step(run, *overrides)
    assert (
        f"the learning-rate schedule differs from the checkpoint's: {named}; from step 2 the learning rate "
        "follows the new schedule (it may jump there)"
    ) in said
    assert lr == pytest.approx(lr_at_step_2, rel=1e-6)


def lr_of_one_more_step(run: Path, *overrides: str) -> tuple[str, float]:
    """(what train.py said, the LR its step took) of the two-step `run` resumed for a third step."""
    result = run_cli(
        "train.py", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=3", "trainer.log_every_n_steps=1",
        *overrides,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return result.stdout + result.stderr, [row["train/lr"] for row in logged if "train/lr" in row][-1]


@pytest.mark.slow
def test_a_schedule_added_on_resume_starts_at_the_resumed_step(tmp_path):
    # Review: a run without a schedule resumed with one started it at its step 0 (a warm-up's 1/50 of optim.lr at
    # step 2, not 3/50).
    run = tmp_path / "run"
    first = run_cli("train.py", *CLI_FAST, "trainer.max_steps=2", "lr_scheduler=none", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr[-2000:]
    _, lr = lr_of_one_more_step(run, "lr_scheduler=warmup", "lr_scheduler.warmup_steps=50")
    assert lr == pytest.approx(2e-4 * 3 / 50, rel=1e-6)


def test_a_moved_run_folder_resumes_with_its_checkpoint_keeping_state(tmp_path):
    # Before, Lightning warned "The dirpath has changed … won't be reloaded" and forgot its top-k: a run keeping
    # its 2 best checkpoints kept the 2 from before the move for good, beside 2 new ones.
    top_2 = [
        "callbacks.model_checkpoint.every_n_train_steps=1",
        "callbacks.model_checkpoint.save_top_k=2",
        "+callbacks.model_checkpoint.monitor=train/loss",
    ]
    first, moved = tmp_path / "first", tmp_path / "moved"
    made = run_cli("train.py", *CLI_FAST, *top_2, f"hydra.run.dir={first}")
    assert made.returncode == 0, made.stderr[-2000:]
    kept_before = sorted(p.name for p in (first / "checkpoints").glob("step_*.ckpt"))
    assert len(kept_before) == 2
    shutil.move(first, moved)
    resumed = run_cli(
        "train.py", "ckpt_path=last", "trainer.max_steps=8", top_2[-1], f"hydra.run.dir={moved}"
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "dirpath has changed" not in resumed.stdout + resumed.stderr
    assert len(list((moved / "checkpoints").glob("step_*.ckpt"))) == 2
    assert (moved / "checkpoints" / "last.ckpt").is_file() and not list(moved.rglob("last-v*.ckpt"))


def test_a_refused_resume_leaves_no_overrides_for_the_next_one(cli_run, tmp_path):
    """Before, a resume refused once Hydra had written .hydra/resumed_step_<step>/ (here: a GPU this machine does
    not have) left its overrides there, and every later plain resume took them up and was refused in turn."""
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    refused = run_cli(
        "train.py", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=3", "trainer=gpu"
    )
    assert refused.returncode == 2 and "error: " in refused.stderr
    assert not list((run / ".hydra").glob("resumed_step_*"))
    resumed = run_cli("train.py", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=3")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "trainer=gpu" not in resumed.stdout
    assert [p.name for p in (run / ".hydra").glob("resumed_step_*")] == ["resumed_step_0000002"]


def test_a_resume_on_other_data_says_so(cli_run, tmp_path):
    # Before, a resume with another data.root trained its remaining steps on another folder without a word.
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    result = run_cli(
        "train.py", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=3", "data.split_seed=7"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert (
        "the training data differs from the checkpoint's: data.split_seed=7 (checkpoint: 0); from step 2 the run "
        "trains on the images this gives"
    ) in result.stdout + result.stderr


def test_a_root_recorded_as_typed_is_the_same_data_as_the_folder_it_names(tmp_path, monkeypatch, caplog):
    """Runs from before roots were recorded as found hold data.root as typed ("pics"): resumed (now recorded as
    <cwd>/pics), the same folder is not called other data; another folder still is."""
    from difflab.runs.resume import warn_if_data_changed

    (tmp_path / "pics").mkdir()
    monkeypatch.chdir(tmp_path)
    stored = {"data": {"root": "pics", "split_seed": 0}}
    with caplog.at_level("WARNING", logger="difflab"):
        warn_if_data_changed({"data.root": str(tmp_path / "pics"), "data.split_seed": 0}, stored, 2)
        assert "differs" not in caplog.text
        warn_if_data_changed({"data.root": str(tmp_path / "other"), "data.split_seed": 0}, stored, 2)
    assert f"data.root={tmp_path / 'other'} (checkpoint: pics)" in caplog.text


def test_a_folder_run_from_before_held_out_by_is_told_how_to_keep_its_split(tmp_path, caplog):
    # Its images were held out by a permutation of the files: resumed under the name split, it would validate on
    # images it trained on, and the warning said "nothing to do if the same dataset moved" (review report).
    from difflab.checkpoint_upgrade import upgraded
    from difflab.runs.resume import warn_if_data_changed

    stored = upgraded({"data": {"dataset": "folder", "root": str(tmp_path), "split_seed": 0}})
    now = {"data.root": str(tmp_path), "data.split_seed": 0}
    with caplog.at_level("WARNING", logger="difflab"):
        warn_if_data_changed({**now, "data.held_out_by": "order"}, stored, 2)
        assert "differs" not in caplog.text
        warn_if_data_changed({**now, "data.held_out_by": "name"}, stored, 2)
    assert caplog.messages == [
        "the training data differs from the checkpoint's: data.held_out_by=name (checkpoint: order); from step 2 "
        "the run would validate on images it trained on: add data.held_out_by=order to keep the checkpoint's "
        "held-out images"
    ]
    digits = upgraded({"data": {"dataset": "digits", "split_seed": 0}})  # no file names: nothing to keep
    assert "held_out_by" not in digits["data"]


def test_a_root_given_through_another_path_to_the_same_folder_is_the_same_data(tmp_path, caplog):
    # Before, a resume started with the README's data.root=../shared/data warned "the training data differs:
    # data.root=/work/main/../shared/data (checkpoint: /work/shared/data)".
    from difflab.runs.resume import warn_if_data_changed

    (tmp_path / "pics").mkdir()
    (tmp_path / "code").mkdir()
    stored = {"data": {"root": str(tmp_path / "pics"), "split_seed": 0}}
    with caplog.at_level("WARNING", logger="difflab"):
        warn_if_data_changed(
            {"data.root": str(tmp_path / "code" / ".." / "pics"), "data.split_seed": 0}, stored, 2
        )
    assert "differs" not in caplog.text


def test_a_resume_with_another_seed_says_so(cli_run, tmp_path):
    # Before, seed=5 on resume drew other noise and batches from the resumed step on, without a word.
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    result = run_cli("train.py", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=3", "seed=5")
    assert result.returncode == 0, result.stderr[-2000:]
    warned = "the seed differs from the checkpoint's: seed=5 (checkpoint: 0); from step 2 the run draws"
    # Before, under Hydra's own label: "[HYDRA] the seed differs".
    assert f"warning: {warned}" in result.stderr
    # Before, on the console only: the checks of a resume run before train.log is open.
    log = (run / "train.log").read_text()
    assert f"[WARNING] - {warned}" in log and "[INFO] - resuming with the run's own overrides: " in log
    same = run_cli("train.py", f"hydra.run.dir={run}", "ckpt_path=last", "trainer.max_steps=4")
    assert same.returncode == 0, same.stderr[-2000:]
    assert "seed differs" not in same.stdout + same.stderr  # the run's own seed, from its latest launch


def test_a_checkpoint_outside_its_run_folder_names_its_own_settings(cli_run, tmp_path):
    # Before: "…; resume with the checkpoint's settings (drop those overrides)", for overrides never given (a
    # checkpoint copied out of its run folder brings none of its run's overrides).
    loose = tmp_path / "copied.ckpt"
    shutil.copy(cli_run / "checkpoints" / "last.ckpt", loose)
    result = run_cli("train.py", f"ckpt_path={loose}", "logger=none", f"hydra.run.dir={tmp_path / 'run'}")
    line = one_error_line(result)
    assert line.startswith(f"error: the config contradicts checkpoint {loose}: ") and line.endswith(
        "; this checkpoint lies outside a run folder, so its run's overrides were not added: give its settings "
        "(model=unet_tiny) on the command line, or start a new run"
    )


def test_a_run_whose_overrides_file_was_removed_names_the_settings_to_give(cli_run, tmp_path):
    # The advice for an unreadable overrides file is to remove it. Before, the resume then said "drop those
    # overrides", for overrides never given: the run's own were what was missing.
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    (run / ".hydra" / "overrides.yaml").unlink()
    line = one_error_line(run_cli("train.py", "ckpt_path=last", "logger=none", f"hydra.run.dir={run}"))
    assert line.startswith(f"error: the config contradicts checkpoint {run / 'checkpoints' / 'last.ckpt'}: ")
    assert line.endswith(
        f"; {run / '.hydra' / 'overrides.yaml'} is missing, so its run's overrides were not added: give its "
        "settings (model=unet_tiny) on the command line, or start a new run"
    )


def test_a_folder_being_trained_is_held_by_one_process_at_a_time(tmp_path):
    from difflab.runs.folder import hold_run_folder, let_go

    hold_run_folder(tmp_path)
    try:
        with pytest.raises(ValueError, match=r"is in use by a run still training there \(pid \d+ on "):
            hold_run_folder(tmp_path)  # another open of the mark, as another process makes
    finally:
        let_go(tmp_path)  # its run has ended (a sweep's process trains its next job on)
    hold_run_folder(tmp_path)
    let_go(tmp_path)


def test_a_fresh_run_into_a_folder_being_trained_is_told_the_run_is_training_not_to_remove_it(tmp_path):
    # Before: "already holds a run that wrote no checkpoint (.hydra): … or remove the folder if that run has
    # ended", while that run was training in it.
    from difflab.runs.folder import hold_run_folder, let_go, reenters_run_folder

    (tmp_path / ".hydra").mkdir()
    hold_run_folder(tmp_path)
    try:
        with pytest.raises(
            ValueError,
            match=rf"^run folder {tmp_path} is in use by a run training there now \(pid \d+ on .*\): pick a new hydra.run.dir$",
        ):
            reenters_run_folder(tmp_path, None, named=True, requeued=False)
    finally:
        let_go(tmp_path)
    with pytest.raises(ValueError, match="already holds a run that wrote no checkpoint"):
        reenters_run_folder(tmp_path, None, named=True, requeued=False)


def test_a_resume_into_a_read_only_checkpoints_folder_is_refused_before_it_trains(tiny_run, monkeypatch):
    # Before, only the run folder itself was checked: a read-only checkpoints/ trained on to the first save, then
    # failed there. (Permissions are faked: root, as tests may run, writes anywhere.)
    import difflab.runs.folder as run_folder

    checkpoints = tiny_run / "checkpoints"
    writable = run_folder.os.access
    monkeypatch.setattr(
        run_folder.os, "access", lambda path, mode: Path(path) != checkpoints and writable(path, mode)
    )
    with pytest.raises(ValueError) as error:
        run_folder.reenters_run_folder(tiny_run, checkpoints / "last.ckpt", named=True, requeued=False)
    assert (
        str(error.value) == f"cannot write in {checkpoints}: permission denied (the resumed run writes there)"
    )


@pytest.mark.slow
def test_a_resume_while_the_run_still_trains_is_refused_and_writes_nothing(tmp_path):
    # Before, both processes trained on into the folder: step_…-v1.ckpt copies beside each periodic checkpoint,
    # last.ckpt from whichever ended last, metrics.jsonl and train.log holding both.
    run = tmp_path / "run"
    args = [
        *[o for o in CLI_FAST if not o.startswith("trainer.max_steps=")],
        "trainer.max_steps=100000",
        "callbacks.sample_grid.every_n_steps=0",
        f"hydra.run.dir={run}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    first = subprocess.Popen([sys.executable, "train.py", *args], cwd=ROOT, env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "last.ckpt").is_file():
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read().decode()[-2000:]
            time.sleep(0.5)
        before = set((run / "checkpoints").iterdir())
        second = run_cli("train.py", *args, "ckpt_path=last")
        assert second.returncode == 2
        assert one_error_line(second).startswith(
            f"error: run folder {run} is in use by a run still training there (pid {first.pid} on "
        )
        assert first.poll() is None  # the run itself trains on
        assert not (run / ".hydra" / "resumed_step_0000000").exists() and not list(
            run.glob(".hydra/resumed_*")
        )
        assert not [p for p in (run / "checkpoints").iterdir() if p not in before and "-v" in p.name]
    finally:
        first.send_signal(signal.SIGTERM)  # saves its step, exits 3, and lets go of the folder
        first.wait(timeout=120)
    step = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    resumed = run_cli("train.py", *args, f"trainer.max_steps={step + 2}", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stderr[-2000:]  # the folder is free once its run has ended


def test_a_run_lets_go_of_its_folder_when_it_ends_in_a_process_that_goes_on(tmp_path):
    # A sweep's process trains its jobs one after another: a job that ended may be resumed meanwhile.
    from difflab.run.train import train
    from difflab.runs.folder import hold_run_folder, let_go

    run = tmp_path / "run"
    run.mkdir()
    hold_run_folder(run)  # as preflight does before the run
    train(compose_config("train", [*FAST_TRAIN, "trainer.max_steps=2"], run))
    hold_run_folder(run)  # another process would now take it too
    let_go(run)


def test_an_lr_schedule_of_another_function_under_the_same_option_is_named_by_its_functions(caplog):
    # lr_scheduler._target_=… typed over the same option: the option names read "warmup (checkpoint: warmup)".
    from difflab.runs.resume import warn_if_lr_schedule_changed

    stored = {
        "lr_scheduler": {"_target_": "difflab.training.linear_warmup"},
        "choices": {"lr_scheduler": "warmup"},
    }
    now = {"_target_": "difflab.training.warmup_cosine"}
    with caplog.at_level("WARNING", logger="difflab"):
        warn_if_lr_schedule_changed(now, stored, 5, "warmup")
    assert "lr_scheduler=warmup_cosine (checkpoint: linear_warmup)" in caplog.text
