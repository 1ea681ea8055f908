"""trainer=fsdp's checkpoint kinds: full and sharded train, anything else is one line before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CLI_FAST, compose_config, one_error_line, run_cli

from difflab.run.train_checks import check_sharded_training


@pytest.mark.parametrize("kind", ["full", "sharded"])
def test_full_and_sharded_checkpoints_are_accepted(kind: str, tmp_path: Path) -> None:
    cfg = compose_config("train", ["trainer=fsdp", f"trainer.strategy.state_dict_type={kind}"], tmp_path)
    check_sharded_training(cfg)


def test_another_checkpoint_kind_is_one_line_naming_both(tmp_path: Path) -> None:
    cfg = compose_config("train", ["trainer=fsdp", "trainer.strategy.state_dict_type=partial"], tmp_path)
    with pytest.raises(ValueError, match="state_dict_type=partial is not one of full, sharded") as error:
        check_sharded_training(cfg)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("value", ["no", "maybe"])
def test_activation_checkpointing_other_than_true_or_false_is_one_line(value: str, tmp_path: Path) -> None:
    """Before, any word was taken as true (`no` turned recomputation on) and trained with rc 0."""
    run = tmp_path / "run"
    fast = [o for o in CLI_FAST if o != "trainer=cpu"] + ["trainer=fsdp", "trainer.accelerator=cpu"]
    overrides = [f"trainer.strategy.activation_checkpointing={value}", f"hydra.run.dir={run}"]
    line = one_error_line(run_cli("train.py", *fast, *overrides))
    assert line == f"error: trainer.strategy.activation_checkpointing='{value}' is not true or false"
    assert not run.exists()


def test_post_hoc_ema_under_fsdp_is_one_line_before_anything_is_built(tmp_path: Path) -> None:
    # Before, it trained with rc 0 and wrote snapshots holding rank 0's half of every weight (as DTensors), which
    # difflab.phema rebuilt into a checkpoint sample.py could not load.
    run = tmp_path / "run"
    fast = [o for o in CLI_FAST if o != "trainer=cpu"] + ["trainer=fsdp", "trainer.accelerator=cpu"]
    line = one_error_line(run_cli("train.py", *fast, "callbacks=[default,phema]", f"hydra.run.dir={run}"))
    assert line == (
        "error: callbacks.phema cannot follow trainer=fsdp's sharded weights (its snapshots would hold rank 0's "
        "shard of each): train post-hoc EMA runs with trainer=ddp, or drop callbacks.phema"
    )
    assert not run.exists()


def test_an_autoencoder_under_fsdp_is_one_line_before_anything_is_written(tmp_path: Path) -> None:
    # Before, both processes raised Lightning's TypeError ("override the configure_model() hook") and left the run
    # folder claimed, so the same command was then refused as a run that wrote no checkpoint.
    run = tmp_path / "run"
    autoencoder = ["experiment=mnist_autoencoder_cpu", "data=digits", "data.image_size=16", "trainer=fsdp"]
    fast = ["trainer.accelerator=cpu", "trainer.max_steps=4", "logger=none", "cpu_threads=1"]
    line = one_error_line(run_cli("train.py", *autoencoder, *fast, f"hydra.run.dir={run}"))
    assert line == (
        "error: trainer=fsdp shards the diffusion networks, not an autoencoder (task=autoencoder): train it with "
        "trainer=ddp, or on one device"
    )
    assert not run.exists()
