"""Post-hoc EMA under two-process DDP on the CPU (gloo), through the real CLI: rank 0 writes each snapshot once,
and the snapshots hold the power-function EMA of the weights every rank trained."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cli

from difflab.training.phema import sigma_rel_to_gamma
from difflab.training.phema_snapshots import list_snapshots, read_snapshot

pytestmark = pytest.mark.slow

STEPS = 4


def test_ddp_snapshots_are_written_once_and_hold_the_power_ema(tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = [
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        f"trainer.max_steps={STEPS}",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "model=unet_tiny",
        "data.batch_size=16",
        "logger=csv",
        "callbacks=[default,phema]",
        "callbacks.phema.every_n_steps=2",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        "callbacks.sample_grid=null",
        "+callbacks.probe._target_=ddp_probe.RankProbe",
        f"+callbacks.probe.dirpath={tmp_path / 'probe'}",
        "cpu_threads=1",
        f"hydra.run.dir={run}",
    ]
    this_checkout = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])
    proc = run_cli("train.py", *overrides, env={"PYTHONPATH": this_checkout}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = run / "phema" / "snapshots"
    assert sorted(p.name for p in folder.iterdir()) == ["step_0000002.pt", "step_0000004.pt"]
    ranks = [torch.load(tmp_path / "probe" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["world_size"] == 2
    raw = []
    for step in range(1, STEPS + 1):
        state = torch.load(run / "checkpoints" / f"step_{step:07d}.ckpt", weights_only=True)[
            "current_model_state"
        ]
        raw.append({k[len("net.") :]: v.double() for k, v in state.items() if k.startswith("net.")})
    for key, value in ranks[1]["raw"].items():  # rank 1 trained the same weights rank 0 saved
        torch.testing.assert_close(value.double(), raw[-1][key], rtol=0, atol=0)
    last = list_snapshots(folder)[-1]
    stored = read_snapshot(last.path)
    for sigma_rel, state in zip(stored["sigma_rels"], stored["states"], strict=True):
        g = sigma_rel_to_gamma(sigma_rel)
        weights = [(s / STEPS) ** (g + 1) - ((s - 1) / STEPS) ** (g + 1) for s in range(1, STEPS + 1)]
        for key, value in state.items():
            expected = sum(w * r[key] for w, r in zip(weights, raw, strict=True))
            torch.testing.assert_close(value.double(), expected, atol=1e-6, rtol=1e-5, msg=key)
