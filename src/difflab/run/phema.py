"""Post-hoc EMA's sweep: rebuild each σ_rel of a list (training/phema_reconstruct.py), score each with evaluate.py's
Fréchet distance and name the best."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from ..io.results import check_writable_file
from ..training.phema import check_sigma_rel
from ..training.phema_reconstruct import plan, reconstruct
from .cli import check_command_line

log = logging.getLogger("difflab")

ROOT = Path(__file__).resolve().parents[3]  # the project: its conf/ and evaluate.py beside src/
CONF_DIR = ROOT / "conf"


@dataclass(frozen=True)
class Scored:
    """One row of a sweep."""

    sigma_rel: float
    score: float
    checkpoint: Path
    report: Path


def sweep(
    run: str | Path,
    sigma_rels: Sequence[float],
    eval_overrides: Sequence[str] = (),
    out: str | Path | None = None,
    step: int | None = None,
) -> tuple[list[Scored], str]:
    """Reconstruct each σ_rel (into the folder `out`, default <run>/phema) and score it as evaluate.py does (its
    overrides: n=, sampler=, metrics=, …); returns the rows and the Fréchet distance's name. Every input and
    output is checked before any work."""
    if len({f"{s:.3f}" for s in sigma_rels}) != len(sigma_rels):  # outputs are named to 3 decimals
        raise ValueError(f"sigma_rel lists a value twice (to 3 decimals): {list(sigma_rels)}")
    for sigma_rel in sigma_rels:
        check_sigma_rel(sigma_rel)
    base = eval_config(eval_overrides)  # a mistyped override is refused before any folder is made
    fd_key = fd_name(base)
    plans = [plan(run, s, step=step, folder=out) for s in sigma_rels]
    configs = [for_checkpoint(base, p.out) for p in plans]
    for cfg in configs:
        check_writable_file(Path(cfg.out))
    rows = []
    for p, cfg in zip(plans, configs, strict=True):
        reconstruct(p)
        report = score(p.out, Path(cfg.out), eval_overrides)
        rows.append(Scored(p.sigma_rel, float(report["metrics"][fd_key]), p.out, Path(cfg.out)))
    return rows, fd_key


def score(ckpt: Path, report: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """evaluate.py's report on `ckpt`, run as a user runs it (its own process: an entry never calls another),
    written to `report` and not logged to the run's W&B run (the checkpoint is not one of its own)."""
    command = [sys.executable, str(ROOT / "evaluate.py"), *overrides, f"ckpt={ckpt}", f"out={report}"]
    result = subprocess.run([*command, "log_wandb=false"], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        raise ValueError(
            f"evaluate.py on {ckpt} failed: {(errors or result.stderr.splitlines() or ['?'])[-1]}"
        )
    return json.loads(report.read_text())


def eval_config(overrides: Sequence[str]) -> Any:
    """evaluate.py's config with the sweep's overrides (mistyped keys named as evaluate.py names them)."""
    check_command_line(CONF_DIR, "eval", list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("eval", overrides=list(overrides))


def for_checkpoint(base: Any, ckpt: Path) -> Any:
    """`base` scoring `ckpt`, its report beside it; not logged to the run's W&B run (not one of its checkpoints)."""
    cfg = base.copy()
    with open_dict(cfg):
        cfg.ckpt = str(ckpt)
        cfg.out = str(ckpt.with_suffix(".metrics.json"))
        cfg.log_wandb = False
    return cfg


def fd_name(cfg: Any) -> str:
    """The key of the Fréchet distance the sweep's metrics report (fd_effl0, fid)."""
    from omegaconf import OmegaConf

    from ..metrics import Evaluator

    return Evaluator(**OmegaConf.to_container(cfg.metrics, resolve=True)).fd_key


def table(rows: list[Scored], fd_key: str) -> str:
    """The sweep as a text table, best last line."""
    best = min(rows, key=lambda r: r.score)
    lines = [f"{'sigma_rel':>9}  {fd_key:>10}  checkpoint"]
    lines += [
        f"{r.sigma_rel:9.3f}  {r.score:10.4f}  {r.checkpoint}"
        for r in sorted(rows, key=lambda r: r.sigma_rel)
    ]
    lines.append(f"best: sigma_rel={best.sigma_rel:.3f} ({fd_key} {best.score:.4f}) -> {best.checkpoint}")
    return "\n".join(lines)
