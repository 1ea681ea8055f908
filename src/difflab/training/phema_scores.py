"""Post-hoc EMA's sweep scored: each reconstructed checkpoint's evaluate.py report, run as a user runs it, and the
sweep's rows as a table naming the best."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]  # the project: its conf/ and evaluate.py beside src/


@dataclass(frozen=True)
class Scored:
    """One row of a sweep."""

    sigma_rel: float
    score: float
    checkpoint: Path
    report: Path


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
