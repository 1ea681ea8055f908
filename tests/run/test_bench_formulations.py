"""benchmarks/formulations.py --wall-time-s: each formulation trains for the same wall time, not the same steps."""

from __future__ import annotations

import importlib.util

import torch
from conftest import FAST_TRAIN, ROOT, compose_config

from difflab.run.train import train


def bench_module():
    spec = importlib.util.spec_from_file_location(
        "bench_formulations", ROOT / "benchmarks" / "formulations.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wall_time_training_stops_on_time_not_on_steps(tmp_path, caplog):
    bench = bench_module()
    assert bench.budget_overrides(None) == []  # without --wall-time-s: the recipes' own steps, as before
    run = tmp_path / "run"
    overrides = [*FAST_TRAIN, "formulation=flow", *bench.budget_overrides(3)]
    cfg = compose_config("train", overrides, run)
    assert cfg.trainer.max_steps == -1 and cfg.trainer.max_time == "00:00:00:03"
    with caplog.at_level("INFO"):
        train(
            cfg
        )  # max_steps=-1: only the clock can end it (how many steps fit in 3 s depends on the machine)
    assert any("Time limit reached" in record.getMessage() for record in caplog.records)
    step = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    assert step >= 1  # last.ckpt holds where the clock stopped it


def test_the_command_line_takes_nfe_n_and_wall_time():
    args = bench_module().parse_arguments(
        ["--nfe", "5", "10", "20", "50", "--n", "1000", "--wall-time-s", "600"]
    )
    assert (args.nfe, args.n, args.wall_time_s) == ([5, 10, 20, 50], 1000, 600)
    assert args.formulations == ["vp", "edm", "flow"]  # all by default
    assert bench_module().parse_arguments(["--formulations", "edm", "flow"]).formulations == ["edm", "flow"]
