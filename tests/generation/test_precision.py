"""Generation in bf16 and batch_size=auto: the network under autocast, the sampler's math in float32, samples close
to fp32 ones; a GPU batch sized from measured memory; a clear error for an unknown precision."""

from __future__ import annotations

import json
import re
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import one_error_line, run_cli

import difflab
from difflab.callbacks import FIDCallback, SampleGrid
from difflab.diffusion import DDIMSampler, auto_batch
from difflab.diffusion.generate import generate
from difflab.diffusion.precision import Autocast
from difflab.generation import GenerationRequest, Task
from difflab.generation.images import Generation
from difflab.generation.methods import Sampling


@pytest.fixture(scope="module")
def pipe(tiny_ckpt: Path) -> difflab.DiffusionPipeline:
    return difflab.load(tiny_ckpt, "cpu")


def test_bf16_runs_the_network_in_bf16_and_hands_the_sampler_float32(pipe) -> None:
    x = torch.randn(4, *pipe.sample_shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0, 300, 600, 999])
    with torch.no_grad():
        full, mixed = pipe.net(x, t), Autocast(pipe.net)(x, t)
    assert mixed.dtype == torch.float32
    relative = float((mixed - full).norm() / full.norm())
    # bf16 keeps ~3 significant digits: a real bf16 forward differs from fp32 by about 1e-3, not 0 and not 10 %.
    assert 1e-4 < relative < 2e-2, relative


@pytest.mark.parametrize("name", ["ddim", "dpm_solver"])
def test_bf16_samples_are_finite_float32_and_close_to_fp32(pipe, name: str) -> None:
    sampler = pipe.make_sampler(name, steps=4)
    seen: list[torch.dtype] = []
    fp32 = generate(sampler, pipe.net, range(6), pipe.sample_shape, 0, 4)
    bf16 = generate(sampler, pipe.net, range(6), pipe.sample_shape, 0, 4, precision="bf16")
    # What generate's bf16 path hands the sampler is Autocast(net); every x_t between steps stays float32.
    shape = (2, *pipe.sample_shape)
    sampler.sample(Autocast(pipe.net), shape, callback=lambda i, t, x: seen.append(x.dtype))
    assert bf16.dtype == torch.float32 and set(seen) == {torch.float32}
    assert bool(torch.isfinite(bf16).all()) and not torch.equal(bf16, fp32)  # bf16 really ran
    assert float((bf16 - fp32).abs().max()) < 1e-2  # pixels in [-1, 1]: far below one 8-bit level (0.0078)


def test_sample_py_bf16_shows_images_per_second_and_records_its_settings(
    tiny_ckpt: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bf16"
    result = run_cli(
        "sample.py", f"ckpt={tiny_ckpt}", "n=3", "sampler.steps=2", "precision=bf16", f"out={out}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"sampling 3 images: 2/2 steps · [\d.]+ steps/s · [\d.]+ images/s", result.stdout), (
        result.stdout
    )
    settings = json.loads((out / "settings.json").read_text())
    assert settings["precision"] == "bf16" and settings["batch_size"] == 3  # auto on a CPU: min(n, 64)


def test_an_unknown_precision_is_one_error_line(tiny_ckpt: Path) -> None:
    line = one_error_line(run_cli("sample.py", f"ckpt={tiny_ckpt}", "precision=fp16"))
    assert line == "error: precision='fp16' is not one of fp32, bf16"
    with pytest.raises(ValueError, match="precision='half' is not supported; choose one of fp32, bf16"):
        FIDCallback(sampler=None, metrics={}, precision="half")


def test_auto_batch_is_64_on_a_cpu_and_capped_at_n(pipe) -> None:
    def batch_size(asked: int | str | None, n: int) -> int:
        request = GenerationRequest(
            Sampling(pipe.make_sampler(), pipe.sample_shape), range(n), batch_size=asked
        )
        return Generation(request, pipe.net).batch_size

    assert batch_size("auto", 1000) == 64
    assert batch_size(None, 5) == 5
    assert batch_size(12, 1000) == 12


def test_the_sample_grid_takes_batch_size_auto(pipe, tmp_path) -> None:
    grid = SampleGrid(partial(DDIMSampler, steps=2), str(tmp_path), num_samples=4, batch_size="auto")
    trainer = SimpleNamespace(
        global_step=2, global_rank=0, world_size=1, is_global_zero=True, callbacks=[], loggers=[],
        datamodule=SimpleNamespace(generation_task=lambda n: Task(pipe.sample_shape)),
    )  # fmt: skip
    module = SimpleNamespace(net=pipe.net, schedule=pipe.schedule, prediction_type=pipe.prediction_type)
    assert grid.log_grid(trainer, module, "step_0000002") == tmp_path / "step_0000002.png"
    assert (tmp_path / "step_0000002.png").is_file()


def test_auto_batch_on_a_gpu_fills_free_memory_from_the_measured_cost_per_sample(monkeypatch) -> None:
    # A fake GPU: each sample of a call costs 1 MiB above a fixed 50 MiB, 1 GiB is free.
    monkeypatch.setattr(auto_batch, "peak_bytes", lambda call, batch, device: (50 + batch) * 2**20)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (2**30, 2**31))
    numel = 3 * 32 * 32
    per_sample = 2**20 + auto_batch.STATE_TENSORS * numel * 4
    fits = int(2**30 * auto_batch.HEADROOM / per_sample)
    batch = auto_batch.auto_batch_size(lambda b: None, 10_000, numel, torch.device("cuda"))
    assert batch == fits // 8 * 8 and 600 < batch < 820  # the fixed 50 MiB is not counted per sample
    assert auto_batch.auto_batch_size(lambda b: None, 100, numel, torch.device("cuda")) == 100
