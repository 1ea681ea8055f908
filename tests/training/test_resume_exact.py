"""Exact resume: a run interrupted part way and resumed ends where an uninterrupted run ends, bit for bit (CPU)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, compose_config, every_error, run_cli

from difflab.data import ImageDataModule
from difflab.run.train import train
from difflab.tracking.run_ids import ID_FILE, choose_run_id

STEPS = 10
# digits keeps 1,707 training images: 6 batches of 256 per epoch, so the run crosses an epoch boundary at
# step 6. Dropout, random flips, an LR warm-up and EMA warm-up all take part; validation and a sample grid
# run in between (they must not disturb the training randomness).
RESUME_TRAIN = [o for o in FAST_TRAIN if not o.startswith("callbacks.model_checkpoint")] + [
    "data.batch_size=256",
    "model.dropout=0.1",
    "data.random_flip=true",
    "lr_scheduler.warmup_steps=5",
    "trainer.val_check_interval=3",
    "callbacks.sample_grid.every_n_steps=4",
]
# Exact on the CPU: the same operations on the same values in the same order give the same bits.
TOLERANCE = 0.0


def run(run_dir: Path, max_steps: int, every: int, *extra: str) -> dict:
    cfg = compose_config(
        "train",
        [
            *RESUME_TRAIN,
            f"trainer.max_steps={max_steps}",
            f"callbacks.model_checkpoint.every_n_train_steps={every}",
            *extra,
        ],
        run_dir,
    )
    train(cfg)
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def losses(run_dir: Path) -> dict[int, float]:
    """step -> train/loss from every CSV log of the run folder (a resume writes its own)."""
    out: dict[int, float] = {}
    for path in sorted((run_dir / "csv").rglob("metrics.csv")):
        for row in csv.DictReader(path.open()):
            if row.get("train/loss"):
                out[int(row["step"])] = float(row["train/loss"])
    return out


def assert_same_tensors(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys(), what
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=TOLERANCE, atol=TOLERANCE, msg=f"{what}: {key}")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict[int, float]]:
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    return run(run_dir, STEPS, 100), losses(run_dir)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "every"),
    [
        (4, 2),  # mid-epoch, saved by the periodic checkpoint during the step
        (6, 3),  # on the last batch of epoch 0
        (5, 100),  # mid-epoch, saved when training ended (Lightning then counts the epoch as finished)
        (3, 100),  # the same, right after a validation (Lightning's logging step would slip by one)
    ],
    ids=["mid-epoch", "epoch-end", "end-of-training", "end-of-training-after-validation"],
)
def test_resumed_run_matches_an_uninterrupted_one(tmp_path, uninterrupted, stop, every):
    expected, expected_losses = uninterrupted
    run_dir = tmp_path / "run"
    first = run(run_dir, stop, every)
    assert first["global_step"] == stop
    resumed = run(run_dir, STEPS, every, "ckpt_path=last")

    assert resumed["global_step"] == STEPS
    assert_same_tensors(resumed["current_model_state"], expected["current_model_state"], "raw weights")
    assert_same_tensors(resumed["state_dict"], expected["state_dict"], "EMA weights")
    assert_same_tensors(resumed["averaging_state"], expected["averaging_state"], "EMA update count")
    got_opt, want_opt = resumed["optimizer_states"][0], expected["optimizer_states"][0]
    assert got_opt["param_groups"] == want_opt["param_groups"]
    for index, state in want_opt["state"].items():
        assert_same_tensors(got_opt["state"][index], state, f"Adam state of parameter {index}")
    assert resumed["lr_schedulers"] == expected["lr_schedulers"]
    # Every step's loss was logged once, the first `stop` by the first part, the rest by the resumed part.
    assert losses(run_dir) == expected_losses
    assert sorted(expected_losses) == list(range(STEPS))


@pytest.mark.slow
def test_resume_with_gradient_accumulation_matches(tmp_path):
    """4 micro-batches per step: an epoch of 6 batches is 2 steps (4 + 2), so step 3 starts at batch 10."""
    accumulate = ["trainer.accumulate_grad_batches=4"]
    expected = run(tmp_path / "a", 5, 100, *accumulate)
    run(tmp_path / "b", 3, 100, *accumulate)
    resumed = run(tmp_path / "b", 5, 100, *accumulate, "ckpt_path=last")
    assert resumed["global_step"] == expected["global_step"] == 5
    assert_same_tensors(resumed["current_model_state"], expected["current_model_state"], "raw weights")
    assert_same_tensors(resumed["state_dict"], expected["state_dict"], "EMA weights")


def test_resume_continues_from_the_checkpoint_step_and_keeps_the_first_logs(tmp_path):
    run_dir = tmp_path / "run"
    run(run_dir, 3, 100)
    first_log = (run_dir / "csv" / "metrics.csv").read_text()
    run(run_dir, 5, 100, "ckpt_path=last")
    (resumed_log,) = (run_dir / "csv").glob("resumed_step_0000003/metrics.csv")
    steps = [int(r["step"]) for r in csv.DictReader(resumed_log.open()) if r.get("train/loss")]
    assert steps == [3, 4], "the resumed part must train steps 3 and 4 only, not start again at 0"
    assert (run_dir / "csv" / "metrics.csv").read_text() == first_log


def test_rewinding_to_an_earlier_checkpoint_sets_the_later_ones_aside_and_writes_no_copies(tmp_path):
    """Resuming from step 2 of a run that reached step 4 (twice): no step_…-v1 or last-v1 copies, last.ckpt is
    the resumed run's own, and what the abandoned continuation wrote is kept, untouched, in a folder."""
    run_dir = tmp_path / "run"
    folder = run_dir / "checkpoints"
    run(run_dir, 4, 2)
    abandoned = {p.name: p.read_bytes() for p in folder.glob("*.ckpt") if p.name != "step_0000002.ckpt"}
    samples = run_dir / "samples"
    abandoned_grids = {p.name: p.read_bytes() for p in samples.glob("*.png") if p.name != "step_0000002.png"}
    assert sorted(abandoned_grids) == ["final.png", "step_0000004.png"]
    for _ in range(2):
        resumed = run(run_dir, 4, 2, f"ckpt_path={folder / 'step_0000002.ckpt'}")
    assert resumed["global_step"] == 4
    aside = folder / "superseded_at_step_0000002"
    assert sorted(p.name for p in folder.iterdir()) == [
        "last.ckpt",
        "step_0000002.ckpt",
        "step_0000004.ckpt",
        aside.name,
        f"{aside.name}_2",
    ]
    assert {p.name: p.read_bytes() for p in aside.iterdir()} == abandoned
    # So are its sample grids (before, the resumed run drew over them at the same names).
    kept = samples / "superseded_at_step_0000002"
    assert {p.name: p.read_bytes() for p in kept.iterdir()} == abandoned_grids
    assert (samples / "step_0000004.png").is_file() and (samples / "final.png").is_file()


def test_resume_from_a_checkpoint_file_into_a_new_folder(tmp_path):
    run(tmp_path / "first", 4, 2)
    ckpt = tmp_path / "first" / "checkpoints" / "step_0000002.ckpt"
    resumed = run(tmp_path / "second", 3, 100, f"ckpt_path={ckpt}")
    assert resumed["global_step"] == 3
    assert sorted(losses(tmp_path / "second")) == [2]


def test_training_order_is_a_function_of_seed_epoch_and_rank():
    dm = ImageDataModule("digits", batch_size=100, seed=7)
    sampler = dm.train_dataloader().sampler
    ranks = [type(sampler)(sampler.size, 100, seed=7, rank=r, world_size=3) for r in range(3)]
    epoch0 = [r.epoch_order(0) for r in ranks]
    # The ranks' shares of an epoch are disjoint, of equal length, and change from epoch to epoch.
    assert len({len(e) for e in epoch0}) == 1
    assert len(torch.cat(epoch0).unique()) == sum(len(e) for e in epoch0)
    assert not torch.equal(ranks[0].epoch_order(0), ranks[0].epoch_order(1))
    assert torch.equal(sampler.epoch_order(3), type(sampler)(sampler.size, 100, seed=7).epoch_order(3))
    # The first iteration starts where the run stands (here batch 2 of epoch 1), the next is all of epoch 2.
    sampler.position = lambda: sampler.batches_per_epoch + 2
    assert list(sampler) == sampler.epoch_order(1)[200:].tolist()
    assert list(sampler) == sampler.epoch_order(2).tolist()


def test_wandb_run_id_comes_from_the_config_then_the_run_folder_then_the_checkpoint(tmp_path):
    stored = {"logger": {"wandb": {"id": "fromckpt"}}}
    assert choose_run_id(None, tmp_path, stored) == "fromckpt"  # ckpt_path=<file> into a new folder
    (tmp_path / ID_FILE).write_text("fromdir\n")
    assert choose_run_id(None, tmp_path, stored) == "fromdir"  # a requeued job, ckpt_path=last
    assert choose_run_id("mine", tmp_path, stored) == "mine"  # logger.wandb.id=… wins
    fresh = choose_run_id(None, tmp_path / "new", None)
    assert len(fresh) == 8 and fresh.isalnum() and fresh != choose_run_id(None, tmp_path / "new", None)


@pytest.mark.slow
def test_ddp_resume_matches_an_uninterrupted_ddp_run(tmp_path):
    """Two CPU processes (gloo): each rank draws its own noise and data share, and both resume exactly."""
    common = [
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        *[o for o in RESUME_TRAIN if not o.startswith("data.batch_size")],
        "data.batch_size=128",  # 853 images per rank: 6 batches per epoch, an epoch boundary at step 6
        "logger=csv",
        "cpu_threads=1",
        "callbacks.model_checkpoint.every_n_train_steps=100",
    ]

    def cli(*args: str) -> None:
        result = run_cli("train.py", *common, *args, timeout=900)
        assert result.returncode == 0, every_error(result)

    cli(f"trainer.max_steps={STEPS}", f"hydra.run.dir={tmp_path / 'a'}")
    cli("trainer.max_steps=5", f"hydra.run.dir={tmp_path / 'b'}")
    cli(f"trainer.max_steps={STEPS}", f"hydra.run.dir={tmp_path / 'b'}", "ckpt_path=last")
    a, b = (
        torch.load(tmp_path / r / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        for r in ("a", "b")
    )
    assert a["global_step"] == b["global_step"] == STEPS
    assert_same_tensors(b["current_model_state"], a["current_model_state"], "raw weights")
    assert_same_tensors(b["state_dict"], a["state_dict"], "EMA weights")
    assert losses(tmp_path / "b") == losses(tmp_path / "a")


def test_a_resume_with_other_checkpoint_settings_replaces_last_ckpt(tmp_path):
    """Before, a resume that changed callbacks.model_checkpoint.* (so Lightning restored none of its state) wrote
    last-v1.ckpt beside a last.ckpt left at the resumed step: the next ckpt_path=last went back there and set the
    newer steps aside, and sample.py of the run folder drew from the stale step."""
    run_dir = tmp_path / "run"
    run(run_dir, 4, 2)
    resumed = run(run_dir, 6, 3, "ckpt_path=last")
    assert resumed["global_step"] == 6
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [
        "last.ckpt",
        "step_0000002.ckpt",
        "step_0000004.ckpt",
        "step_0000006.ckpt",
    ]
