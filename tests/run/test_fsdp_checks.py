"""trainer=fsdp's checkpoint kinds: full and sharded train, anything else is one line before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import compose_config

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
