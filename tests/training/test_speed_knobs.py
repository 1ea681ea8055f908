"""The speed knobs change how fast training runs, never what it computes: channels_last gives the same losses
as the default layout, bf16-mixed trains on a CPU with clipping and the fused Adam, and compile=true
trains the same model as eager mode (checked for correctness only, with the aot_eager backend)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, compose_config, one_error_line, run_cli
from omegaconf import open_dict

from difflab.checkpoint import load_model, read_checkpoint
from difflab.run.rules import check_values
from difflab.run.train import train
from difflab.run.train_checks import RULES
from difflab.runlogs import run_series


def losses(tmp_path: Path, name: str, *extra: str) -> list[float]:
    """train/loss of each step of a short run."""
    out = tmp_path / name
    cfg = compose_config("train", [*FAST_TRAIN, "callbacks.sample_grid=null", *extra], out)
    with open_dict(cfg):
        cfg.trainer.enable_checkpointing = True
    train(cfg)
    return [value for _, value in run_series(out)["train/loss"]]


def test_channels_last_trains_the_same_losses_as_the_default_layout(tmp_path):
    nhwc = losses(tmp_path, "nhwc", "channels_last=true")
    nchw = losses(tmp_path, "nchw", "channels_last=false")
    assert len(nhwc) == 4
    # Same arithmetic in another memory order: equal up to the summation order of the convolutions.
    assert nhwc == pytest.approx(nchw, rel=1e-4)


def test_bf16_mixed_trains_on_a_cpu_with_gradient_clipping_and_a_usable_checkpoint(tmp_path):
    fp32 = losses(tmp_path, "fp32")
    bf16 = losses(tmp_path, "bf16", "trainer.precision=bf16-mixed", "trainer.gradient_clip_val=1.0")
    assert all(torch.isfinite(torch.tensor(bf16)))
    assert bf16 != fp32  # it did run in bf16
    assert bf16 == pytest.approx(fp32, rel=0.05)  # bf16 keeps ~3 significant digits
    loaded = load_model(tmp_path / "bf16" / "checkpoints" / "last.ckpt")
    assert all(p.dtype == torch.float32 for p in loaded.net.parameters())  # the weights stay float32


def test_fp16_with_a_fused_optimizer_and_clipping_is_refused_before_a_run_folder_exists(tmp_path):
    # On a GPU (accelerator=gpu is refused here only after this check, before anything is written).
    run = tmp_path / "run"
    result = run_cli(
        "train.py", "trainer.precision=16-mixed", "trainer.accelerator=gpu", f"hydra.run.dir={run}"
    )
    assert result.returncode == 2
    assert "cannot clip the gradients of a fused optimizer" in one_error_line(result)
    assert not run.exists()


def test_fp16_on_a_cpu_is_refused_naming_bf16(tmp_path):
    # Before, optim.fused=false let it through: Lightning warned and trained in bf16-mixed, while the summary,
    # .hydra/config.yaml and the checkpoint recorded 16-mixed. With the default fused optimizer this refusal comes
    # first: before, the fused-clipping one did, and its remedy optim.fused=false only led here.
    run = tmp_path / "run"
    result = run_cli(
        "train.py", "trainer.precision=16-mixed", "trainer.accelerator=cpu", f"hydra.run.dir={run}"
    )
    assert one_error_line(result) == (
        "error: trainer.precision=16-mixed (float16 with a loss scaler) runs on CUDA GPUs only: on this CPU use "
        "trainer.precision=bf16-mixed"
    )
    assert not run.exists()


def test_compiled_training_matches_eager_training_and_saves_plain_weights(tmp_path, monkeypatch):
    # Dynamo's graph capture and AOT autograd, where difflab's wiring could go wrong (the EMA copy, the weight
    # names), without inductor's C++ build of every kernel: 90 s on a fresh machine, not what this tests.
    compiled_nets = []
    original = torch.nn.Module.compile

    def compile_for_test(module, *args, **kwargs):
        compiled_nets.append(module)
        return original(module, *args, **{**kwargs, "backend": "aot_eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", compile_for_test)
    eager = losses(tmp_path, "eager")
    assert compiled_nets == []
    compiled = losses(tmp_path, "compiled", "compile=true")
    assert len(compiled_nets) == 1 and compiled_nets[0]._compiled_call_impl is not None
    assert compiled == pytest.approx(eager, rel=1e-3)
    ckpt = read_checkpoint(tmp_path / "compiled" / "checkpoints" / "last.ckpt")
    assert not [k for k in ckpt["state_dict"] if "_orig_mod" in k]  # loadable by an uncompiled net
    load_model(tmp_path / "compiled" / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize("value", ["16-true", "bf16-true", "fp16"])
def test_precisions_that_do_not_train_here_are_named(tmp_path, value):
    cfg = compose_config("train", [f"trainer.precision={value}"], tmp_path)
    with pytest.raises(
        ValueError, match=f"^trainer.precision='{value}' is not one of 32-true, 32, bf16-mixed"
    ):
        check_values(cfg, RULES)
