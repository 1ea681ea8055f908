"""compile=regional compiles each repeated block of the net (not the net), trains what eager mode trains and saves
plain weights; a net without repeated blocks is compiled whole. Checked with the aot_eager backend (Dynamo and AOT
autograd, without inductor's C++ build); compile times are measured in benchmarks/unet_vs_diffusers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, compose_config, one_error_line, run_cli
from omegaconf import open_dict

from difflab.checkpoint import load_model, read_checkpoint
from difflab.models.blocks import repeated_blocks
from difflab.models.unet import ResAttnBlock
from difflab.run.train import train
from difflab.runlogs import run_series
from difflab.training.compile import compile_denoiser


@pytest.fixture
def compiled_modules(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[torch.nn.Module]]:
    """Every module compiled while the test runs (with the aot_eager backend)."""
    compiled: list[torch.nn.Module] = []
    original = torch.nn.Module.compile
    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = 8  # Dynamo's default; restored after the test

    def compile_for_test(module, *args, **kwargs):
        compiled.append(module)
        return original(module, *args, **{**kwargs, "backend": "aot_eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", compile_for_test)
    yield compiled
    torch._dynamo.config.recompile_limit = limit


def losses(tmp_path: Path, name: str, *extra: str) -> list[float]:
    out = tmp_path / name
    cfg = compose_config("train", [*FAST_TRAIN, "callbacks.sample_grid=null", *extra], out)
    with open_dict(cfg):
        cfg.trainer.enable_checkpointing = True
    train(cfg)
    return [value for _, value in run_series(out)["train/loss"]]


def test_regional_compile_compiles_each_block_and_trains_as_eager(tmp_path, compiled_modules):
    eager = losses(tmp_path, "eager")
    assert compiled_modules == []
    regional = losses(tmp_path, "regional", "compile=regional")
    assert compiled_modules and all(isinstance(m, ResAttnBlock) for m in compiled_modules)
    net = load_model(tmp_path / "regional" / "checkpoints" / "last.ckpt").net
    assert len(compiled_modules) == len(repeated_blocks(net))  # every block, each once
    # Every block can have its own graph: none is left to run eager past Dynamo's recompile limit.
    assert torch._dynamo.config.recompile_limit >= 4 * len(compiled_modules) > 8
    assert regional == pytest.approx(eager, rel=1e-3)
    ckpt = read_checkpoint(tmp_path / "regional" / "checkpoints" / "last.ckpt")
    assert not [k for k in ckpt["state_dict"] if "_orig_mod" in k]


def test_a_net_without_repeated_blocks_is_compiled_whole(compiled_modules):
    net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    compile_denoiser(net, "regional")
    assert compiled_modules == [net]


def test_a_compile_value_that_is_not_a_mode_is_one_line(tmp_path):
    line = one_error_line(run_cli("train.py", "compile=blocks", f"hydra.run.dir={tmp_path / 'run'}"))
    assert "compile" in line and "regional" in line
    assert not (tmp_path / "run").exists()
