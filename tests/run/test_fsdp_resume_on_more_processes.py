"""trainer=fsdp resumed on more processes than wrote the checkpoint: a 1-process run's sharded and full
checkpoints, resumed on 2 CPU processes (gloo). torch.distributed.checkpoint reshards a sharded folder on load; a
full file is broadcast from rank 0 and every rank keeps its shards.

The 1-process runs save at step 2 of 3 (mid-epoch, as a periodic checkpoint is) and the resumes start from there.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_cli
from test_fsdp import THIS_CHECKOUT
from test_fsdp_sharded import SHARD_FILES, logged
from test_fsdp_sharded_resume import FULL, SHARDED, assert_same_training_state, ran, train

from difflab.checkpoint import read_checkpoint

pytestmark = pytest.mark.slow

SAVED_AT, RESUMED_TO = 2, 4
KINDS = {"sharded": SHARDED, "full": FULL}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """For each kind: <kind>/one (1 process, step_0000002.ckpt), <kind>/two (resumed from it on 2 processes to step
    4, with the state it loaded in <kind>/loaded/loaded.pt) and <kind>/samples (sample.py on two's last.ckpt)."""
    base = tmp_path_factory.mktemp("more_processes")
    for kind, state_dict_type in KINDS.items():
        one, two = base / kind / "one", base / kind / "two"
        ran(
            train(
                state_dict_type,
                f"trainer.max_steps={SAVED_AT + 1}",
                f"callbacks.model_checkpoint.every_n_train_steps={SAVED_AT}",
                f"hydra.run.dir={one}",
                devices=1,
            )
        )
        ran(
            train(
                f"ckpt_path={one / 'checkpoints' / f'step_{SAVED_AT:07d}.ckpt'}",
                state_dict_type,
                f"trainer.max_steps={RESUMED_TO}",
                "logger=csv",
                "+callbacks.loaded._target_=fsdp_probe.LoadedState",
                f"+callbacks.loaded.dirpath={base / kind / 'loaded'}",
                f"hydra.run.dir={two}",
                devices=2,
            )
        )
        sampled = run_cli(
            "sample.py",
            f"ckpt={two / 'checkpoints' / 'last.ckpt'}",
            "n=2",
            "sampler.steps=2",
            f"out={base / kind / 'samples'}",
            env=THIS_CHECKOUT,
        )
        ran(sampled)
    return base


def batches_done(checkpoint: dict[str, Any]) -> int:
    """The training batches Lightning counts as completed in `checkpoint` (where a resume picks up)."""
    return checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_one_process_checkpoint_resumes_on_two_processes_with_the_saved_state(
    runs: Path, kind: str
) -> None:
    """Step, epoch and batch position, raw weights, EMA and Adam state that 2 ranks start from equal what 1 process
    saved (tolerance 0)."""
    saved = read_checkpoint(runs / kind / "one" / "checkpoints" / f"step_{SAVED_AT:07d}.ckpt")
    loaded = torch.load(runs / kind / "loaded" / "loaded.pt", weights_only=True)
    assert (loaded["epoch"], loaded["batches"]) == (saved["epoch"], batches_done(saved))
    as_checkpoint = {
        "global_step": loaded["global_step"],
        "current_model_state": loaded["raw"],
        "state_dict": loaded["ema"],
        "optimizer_states": [loaded["optimizer"]],
    }
    assert saved["global_step"] == SAVED_AT
    assert_same_training_state(as_checkpoint, saved)


@pytest.mark.parametrize("kind", KINDS)
def test_two_processes_continue_from_a_one_process_checkpoint_and_sample_py_reads_the_result(
    runs: Path, kind: str
) -> None:
    two = runs / kind / "two"
    losses = logged(two, "train/loss")
    assert sorted(losses) == list(range(SAVED_AT, RESUMED_TO))  # the steps after the resume, none repeated
    assert all(math.isfinite(loss) for loss in losses.values())
    last = two / "checkpoints" / "last.ckpt"
    assert read_checkpoint(last)["global_step"] == RESUMED_TO
    if kind == "sharded":  # written by the 2 ranks now training, one shard file each
        assert sorted(p.name for p in last.iterdir()) == sorted(SHARD_FILES)
    else:
        assert last.is_file()
    assert len(list((runs / kind / "samples").rglob("*.png"))) >= 2
