"""trainer=fsdp with trainer.strategy.state_dict_type=sharded on two CPU processes (gloo): every rank writes its
own shards of the weights, the EMA and the optimizer state, a resume from them is exact, and sample.py reads them."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from conftest import every_error, run_cli
from test_fsdp import THIS_CHECKOUT, cli

from difflab.checkpoint import read_checkpoint

SHARDED = [
    "trainer.strategy.state_dict_type=sharded",
    "logger=csv",
    "trainer.val_check_interval=3",
    "callbacks.model_checkpoint.every_n_train_steps=3",
    "callbacks.sample_grid.every_n_steps=3",
    "callbacks.sample_grid.num_samples=3",
    "callbacks=[default,fid]",
    "callbacks.fid.every_n_steps=3",
    "callbacks.fid.num_samples=5",
    "callbacks.fid.batch_size=2",
    "metrics.num_reference=20",
    "metrics.kid_subset_size=5",
]
SHARD_FILES = ["__0_0.distcp", "__1_0.distcp", ".metadata", "meta.pt"]


def logged(run: Path, key: str) -> dict[int, float]:
    """`key` by step, from the run's metrics.csv and a resumed run's resumed_step_*/metrics.csv."""
    out = {}
    for metrics in sorted((run / "csv").rglob("metrics.csv")):
        out.update({int(r["step"]): float(r[key]) for r in csv.DictReader(metrics.open()) if r.get(key)})
    return out


@pytest.mark.slow
def test_sharded_checkpoints_resume_exactly_and_sample_py_reads_them(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    cache = f"metrics.cache_dir={tmp_path / 'cache'}"
    cli(*SHARDED, cache, "trainer.max_steps=6", f"hydra.run.dir={a}")
    cli(*SHARDED, cache, "trainer.max_steps=3", f"hydra.run.dir={b}")
    cli(*SHARDED, cache, "trainer.max_steps=6", f"hydra.run.dir={b}", "ckpt_path=last")

    # Each checkpoint is a folder of one shard file per rank; nothing half-written or gathered is left.
    folder = b / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.ckpt",  # the FID callback's best score so far
        "last.ckpt",
        "step_0000003.ckpt",
        "step_0000006.ckpt",
    ]
    for checkpoint in folder.iterdir():
        assert sorted(p.name for p in checkpoint.iterdir()) == sorted(SHARD_FILES), checkpoint

    first, resumed = (read_checkpoint(r / "checkpoints" / "last.ckpt") for r in (a, b))
    assert first["global_step"] == resumed["global_step"] == 6
    for kind in ("current_model_state", "state_dict"):  # the raw weights and the EMA's
        assert first[kind].keys() == resumed[kind].keys()
        for key in first[kind]:
            torch.testing.assert_close(
                resumed[kind][key], first[kind][key], rtol=0, atol=0, msg=f"{kind} {key}"
            )
    assert any(
        not torch.equal(first["state_dict"][k], first["current_model_state"][k]) for k in first["state_dict"]
    )
    state_a, state_b = (c["optimizer_states"][0]["state"] for c in (first, resumed))
    assert state_a.keys() == state_b.keys() and state_a
    for name in state_a:
        torch.testing.assert_close(state_b[name]["exp_avg_sq"], state_a[name]["exp_avg_sq"], rtol=0, atol=0)
    after_resume = {step: loss for step, loss in logged(a, "train/loss").items() if step >= 3}
    assert after_resume and {s: logged(b, "train/loss")[s] for s in after_resume} == after_resume
    # The grid and FID callbacks sample the gathered EMA on every rank, as under full checkpoints.
    assert (b / "samples" / "step_0000006.png").is_file()
    fid = list(logged(b, "val/fd_effl0").values())
    assert len(fid) == 2 and all(math.isfinite(x) and x > 0 for x in fid)

    out = tmp_path / "samples"
    ckpt = folder / "last.ckpt"
    result = run_cli("sample.py", f"ckpt={ckpt}", "n=3", "sampler.steps=2", f"out={out}", env=THIS_CHECKOUT)
    assert result.returncode == 0, every_error(result)
    assert len(list(out.rglob("*.png"))) >= 3
