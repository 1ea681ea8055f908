"""trainer=fsdp checkpoints beyond a same-kind, same-size resume (two CPU processes, gloo): a SIGTERM during a
sharded run writes a whole sharded folder and the run resumes from it; a run resumes across checkpoint kinds
(sharded -> full in the same run folder, full -> sharded); a sharded checkpoint of 2 ranks is loaded by 1 process.

One set of short runs serves every test: U (full checkpoints, 4 steps, uninterrupted) is the reference.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from conftest import run_cli
from test_fsdp import COMMON, THIS_CHECKOUT
from test_fsdp_sharded import SHARD_FILES

from difflab.checkpoint import read_checkpoint

pytestmark = pytest.mark.slow

QUICK = [
    "logger=none",
    "callbacks.sample_grid=null",
    "trainer.val_check_interval=1000",
    "trainer.max_steps=4",
]
SHARDED = "trainer.strategy.state_dict_type=sharded"
FULL = "trainer.strategy.state_dict_type=full"


def train(*args: str, devices: int = 2) -> Any:
    """train.py on `devices` CPU processes; `args` replace the defaults above for the keys they set."""
    given = {a.split("=", 1)[0] for a in args} | {"trainer.devices"}
    defaults = [o for o in [*COMMON, *QUICK] if o.split("=", 1)[0] not in given]
    return run_cli("train.py", *defaults, f"trainer.devices={devices}", *args, env=THIS_CHECKOUT, timeout=600)


def ran(result: Any) -> None:
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("sharded_resume")
    u, s, r = base / "u", base / "s", base / "r"
    # U: the reference, full checkpoints at steps 2 and 4.
    ran(train(FULL, "callbacks.model_checkpoint.every_n_train_steps=2", f"hydra.run.dir={u}"))
    # S: sharded; SIGTERM lands during step 2 on each rank, the ranks agree at step 2 and save last.ckpt there.
    stopped = train(
        SHARDED,
        "callbacks.model_checkpoint.every_n_train_steps=1000",
        "preemption_check_every_n_steps=2",
        "+callbacks.probe._target_=signal_probe.StepProbe",
        f"+callbacks.probe.dirpath={base / 'probe'}",
        "+callbacks.probe.signal_at_step=1",
        "+callbacks.probe.signal_name=SIGTERM",
        f"hydra.run.dir={s}",
    )
    at_sigterm = read_checkpoint(s / "checkpoints" / "last.ckpt") if stopped.returncode == 3 else None
    files_at_sigterm = sorted(p.name for p in (s / "checkpoints").rglob("*"))
    # S resumed in its own folder with full checkpoints: last.ckpt goes from a folder to a file.
    probe_again = [a for a in stopped.args if a.startswith("+callbacks.probe")]  # a resume takes no new key
    sharded_to_full = train("ckpt_path=last", FULL, *probe_again, f"hydra.run.dir={s}")
    # R: U's full step-2 checkpoint resumed with sharded checkpoints, in a new folder.
    full_to_sharded = train(
        f"ckpt_path={u / 'checkpoints' / 'step_0000002.ckpt'}", SHARDED, f"hydra.run.dir={r}"
    )
    # W: R's sharded last.ckpt (written by 2 ranks) resumed by 1 process for one more step.
    one_process = train(
        f"ckpt_path={r / 'checkpoints' / 'last.ckpt'}",
        SHARDED,
        "trainer.max_steps=5",
        "+callbacks.loaded._target_=fsdp_probe.LoadedState",
        f"+callbacks.loaded.dirpath={base / 'loaded'}",
        f"hydra.run.dir={base / 'w'}",
        devices=1,
    )
    return {
        "base": base,
        "stopped": stopped,
        "at_sigterm": at_sigterm,
        "files_at_sigterm": files_at_sigterm,
        "sharded_to_full": sharded_to_full,
        "full_to_sharded": full_to_sharded,
        "one_process": one_process,
    }


def assert_same_training_state(got: dict[str, Any], expected: dict[str, Any]) -> None:
    """Step, raw weights, EMA and Adam's moments equal, tolerance 0."""
    assert got["global_step"] == expected["global_step"]
    for kind in ("current_model_state", "state_dict"):  # the raw weights and the EMA's
        assert got[kind].keys() == expected[kind].keys()
        for key in expected[kind]:
            torch.testing.assert_close(
                got[kind][key], expected[kind][key], rtol=0, atol=0, msg=f"{kind} {key}"
            )
    got_adam, expected_adam = (adam_moments(c) for c in (got, expected))
    assert len(got_adam) == len(expected_adam) > 0
    for index, (got_moments, expected_moments) in enumerate(zip(got_adam, expected_adam, strict=True)):
        for a, b in zip(got_moments, expected_moments, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"Adam state of parameter {index}")


def adam_moments(checkpoint: dict[str, Any]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Adam's two moments per parameter, in the optimizer's order: a full checkpoint keys them by index, a sharded
    one by parameter name."""
    optimizer = checkpoint["optimizer_states"][0]
    order = [p for group in optimizer["param_groups"] for p in group["params"]]
    return [(optimizer["state"][p]["exp_avg"], optimizer["state"][p]["exp_avg_sq"]) for p in order]


def test_sigterm_during_a_sharded_run_writes_a_whole_sharded_checkpoint(runs: dict[str, Any]) -> None:
    stopped, s = runs["stopped"], runs["base"] / "s"
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert f"stopped on SIGTERM at step 2 after saving {s / 'checkpoints' / 'last.ckpt'}" in stopped.stderr
    # One folder with every rank's shard, the index and the metadata; no temp folder or file beside it.
    assert runs["files_at_sigterm"] == sorted(["last.ckpt", *SHARD_FILES])
    u_step_2 = read_checkpoint(runs["base"] / "u" / "checkpoints" / "step_0000002.ckpt")
    assert_same_training_state(runs["at_sigterm"], u_step_2)


def test_a_sharded_checkpoint_resumes_with_full_checkpoints_in_the_same_folder(runs: dict[str, Any]) -> None:
    """S stopped by SIGTERM at step 2 (sharded) continues to step 4 writing full checkpoints, exactly as U."""
    ran(runs["sharded_to_full"])
    last = runs["base"] / "s" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    expected = read_checkpoint(runs["base"] / "u" / "checkpoints" / "last.ckpt")
    assert_same_training_state(read_checkpoint(last), expected)


def test_a_full_checkpoint_resumes_with_sharded_checkpoints(runs: dict[str, Any]) -> None:
    ran(runs["full_to_sharded"])
    last = runs["base"] / "r" / "checkpoints" / "last.ckpt"
    assert sorted(p.name for p in last.iterdir()) == sorted(SHARD_FILES)
    expected = read_checkpoint(runs["base"] / "u" / "checkpoints" / "last.ckpt")
    assert_same_training_state(read_checkpoint(last), expected)


def test_a_sharded_checkpoint_of_two_ranks_loads_in_one_process(runs: dict[str, Any]) -> None:
    """torch.distributed.checkpoint reshards on load: the weights, EMA and step one process starts from are the
    ones 2 ranks saved. Its data order differs from a 2-rank run's, so what follows is not compared."""
    ran(runs["one_process"])
    saved = read_checkpoint(runs["base"] / "r" / "checkpoints" / "last.ckpt")
    loaded = torch.load(runs["base"] / "loaded" / "loaded.pt", weights_only=True)
    assert loaded["global_step"] == saved["global_step"] == 4
    for kind, key in (("raw", "current_model_state"), ("ema", "state_dict")):
        assert loaded[kind].keys() == saved[key].keys()
        for name, value in saved[key].items():
            torch.testing.assert_close(loaded[kind][name], value, rtol=0, atol=0, msg=f"{kind} {name}")
    one_rank = runs["base"] / "w" / "checkpoints" / "last.ckpt"
    assert read_checkpoint(one_rank)["global_step"] == 5
    assert sorted(p.name for p in one_rank.iterdir()) == sorted(["__0_0.distcp", ".metadata", "meta.pt"])
