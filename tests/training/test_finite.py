"""A diverging run stops with one line naming the step, and NaN never reaches a checkpoint or a sample grid."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import FAST_TRAIN, compose_config

from difflab.callbacks import SampleGrid
from difflab.diffusion import DDIMSampler, NoiseSchedule
from difflab.diffusion.formulations import VPTraining
from difflab.generation import Task
from difflab.run.errors import exit_on_user_error
from difflab.run.train import train
from difflab.training import NonFiniteError
from difflab.training.finite import LossWatch, first_non_finite


def assert_nothing_non_finite_written_from(run_dir: Path, failed_step: int) -> None:
    """Every checkpoint in the run folder holds finite weights and optimizer state, and no grid is of the
    failed step or later. (Other entries may hold inf by design, e.g. ModelCheckpoint's kth_value.)"""
    for path in run_dir.rglob("*.ckpt"):
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        trained = {k: ckpt[k] for k in ("state_dict", "current_model_state", "optimizer_states")}
        assert first_non_finite(trained) is None, path
    for path in run_dir.rglob("*.png"):
        assert path.stem != "final", "no final grid after a failure"
        if match := re.fullmatch(r"step_(\d+)", path.stem):
            assert int(match[1]) < failed_step, path


def test_a_huge_learning_rate_stops_the_run_naming_the_step(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=r"at step \d+ .*; lower optim\.lr") as excinfo:
        train(compose_config("train", [*FAST_TRAIN, "optim.lr=1e6", "trainer.max_steps=8"], run_dir))
    message = str(excinfo.value)
    assert "\n" not in message
    assert_nothing_non_finite_written_from(run_dir, int(re.search(r"at step (\d+)", message)[1]))


def nan_loss_from_training_call(number: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the loss of the given training call NaN (validation calls pass a generator and are not counted)."""
    real, calls = VPTraining.loss, []

    def loss(self: VPTraining, *args: object, **kwargs: object) -> torch.Tensor:
        value = real(self, *args, **kwargs)
        if kwargs.get("generator") is None:
            calls.append(1)
            if len(calls) == number:
                return value * float("nan")
        return value

    monkeypatch.setattr(VPTraining, "loss", loss)


def test_a_nan_loss_is_named_by_its_step_before_the_next_checkpoint_and_the_entry_point_prints_one_line(
    tmp_path, monkeypatch, capsys
):
    nan_loss_from_training_call(4, monkeypatch)  # step 3, after the checkpoint and grid of step 2
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as excinfo:
        exit_on_user_error(train)(compose_config("train", [*FAST_TRAIN, "trainer.max_steps=8"], run_dir))
    assert excinfo.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    # Looked at (without a per-step device sync) before the grid and checkpoint of step 4.
    assert err.startswith("error: loss is nan at step 3 (training stopped at step 4; "), err
    # A resume refuses another optim.lr: the line says how to go on from the last good checkpoint with one.
    last_good = run_dir / "checkpoints" / "last.ckpt"
    assert err.endswith(
        f"lower optim.lr, clip gradients (trainer.gradient_clip_val) or check the data; to go on from {last_good} "
        f"with a lower optim.lr, start a new run with init_from={last_good} (a resume keeps the run's optim.lr)"
    ), err
    assert_nothing_non_finite_written_from(run_dir, 3)
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == 2, "the last good checkpoint is kept"
    assert (run_dir / "samples" / "step_0000002.png").is_file()


class NaNNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(float("nan")))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x * self.w


def test_the_sample_grid_refuses_non_finite_samples(tmp_path):
    grid = SampleGrid(partial(DDIMSampler, steps=2), str(tmp_path), num_samples=4)
    trainer = SimpleNamespace(
        global_step=6, global_rank=0, world_size=1, is_global_zero=True, callbacks=[], loggers=[],
        datamodule=SimpleNamespace(generation_task=lambda n: Task((1, 4, 4))),
    )  # fmt: skip
    module = SimpleNamespace(
        net=NaNNet(), schedule=NoiseSchedule.from_name("linear", timesteps=10), prediction_type="epsilon"
    )
    with pytest.raises(NonFiniteError, match=r"^sample grid step_0000006 at step 6 has non-finite pixels"):
        grid.log_grid(trainer, module, "step_0000006")
    assert not list(tmp_path.iterdir())


class WatchedTrainer(SimpleNamespace):
    """What LossWatch reads of a Trainer; strategy.reduce takes the min with another rank's earliest bad step."""

    def __init__(self, world_size: int, other_rank_first_bad: int | None = None) -> None:
        super().__init__(global_step=0, world_size=world_size)
        self.reduced_at: list[int] = []
        other = torch.iinfo(torch.long).max if other_rank_first_bad is None else other_rank_first_bad
        self.strategy = SimpleNamespace(root_device=torch.device("cpu"), reduce=self._reduce)
        self._other = torch.tensor(other)

    def _reduce(self, tensor: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "min"
        self.reduced_at.append(self.global_step)
        return torch.minimum(tensor, self._other)


def train_watched(trainer: WatchedTrainer, bad_step: int | None, steps: int = 100, every: int = 20) -> str:
    """Steps 0..steps-1 as DiffusionModule takes them: record the loss, check when due. The error, or ''."""
    watch = LossWatch(every)
    for step in range(steps):
        trainer.global_step = step
        watch.record(torch.tensor(float("nan") if step == bad_step else 0.5), step)
        if watch.due(step, max_steps=steps):
            try:
                watch.check(trainer)
            except NonFiniteError as error:
                return str(error)
    return ""


def test_the_loss_is_looked_at_only_every_n_steps_and_the_error_names_the_first_bad_step():
    trainer = WatchedTrainer(world_size=2)
    message = train_watched(trainer, bad_step=7)
    assert message.startswith("loss is nan at step 7 (training stopped at step 19; "), message
    assert "\n" not in message
    assert trainer.reduced_at == [19]  # the one collective, before the update that makes global step 20

    trainer = WatchedTrainer(world_size=2)
    assert train_watched(trainer, bad_step=None, steps=50) == ""
    assert trainer.reduced_at == [19, 39, 49]  # and at the last step


def test_under_ddp_a_bad_loss_on_another_rank_stops_this_one_at_the_same_step():
    message = train_watched(WatchedTrainer(world_size=2, other_rank_first_bad=12), bad_step=15)
    assert message.startswith("loss is not finite on another rank at step 12 (training stopped at step 19; ")


def test_one_process_reads_the_note_without_a_collective():
    trainer = WatchedTrainer(world_size=1)
    message = train_watched(trainer, bad_step=3)
    assert message.startswith("loss is nan at step 3 (training stopped at step 19; ")
    assert trainer.reduced_at == []
