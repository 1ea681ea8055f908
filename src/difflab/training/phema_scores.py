"""Post-hoc EMA's sweep scored: each reconstructed checkpoint's evaluate.py report, run as a user runs it, what an
earlier run of the same sweep left, and the sweep's rows as a table naming the best."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_text
from ..io.results import check_writable_file
from .phema_reconstruct import Plan, sigma_rel_text

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


def done_before(p: Plan, eval_overrides: Sequence[str]) -> str | None:
    """What this sweep, run before and stopped, left for p's σ_rel (each file is written whole or not at all):
    None (nothing), "rebuilt" (its checkpoint) or "scored" (and its report). Its record (<checkpoint>.sweep.json,
    written first) holds the evaluate.py overrides it was scored with: files without one, or made with others,
    are refused in one line and never overwritten."""
    ckpt, report, record = p.out, p.out.with_suffix(".metrics.json"), p.out.with_suffix(".sweep.json")
    if not record.is_file():
        for path in (ckpt, report, record):
            check_writable_file(path)
        return None
    try:
        recorded = json.loads(record.read_text())["evaluate"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(
            f"{record} is damaged: remove it (and {ckpt.name}, {report.name}) or choose another out="
        ) from None
    if not same_overrides(recorded, eval_overrides):
        raise ValueError(
            f"{ckpt} was made by a sweep with other evaluate.py overrides ({' '.join(recorded) or 'none'}; this "
            f"command: {' '.join(eval_overrides) or 'none'}): give the same to continue it, or another out="
        )
    if not ckpt.is_file():
        check_writable_file(report)
        return None
    return "scored" if report.is_file() else "rebuilt"


def same_overrides(recorded: Sequence[str], given: Sequence[str]) -> bool:
    """Whether two lists of overrides say the same: in any order, unless a key is given twice (the last wins).
    autoencoder= is left out: it only says where the autoencoder is, whose hash must be the recorded one."""
    recorded, given = scoring(recorded), scoring(given)
    keys = [override.split("=", 1)[0] for override in given]
    return recorded == given or (len(set(keys)) == len(keys) and sorted(recorded) == sorted(given))


def scoring(overrides: Sequence[str]) -> list[str]:
    """The overrides that can change a sweep's scores: all but autoencoder= (a moved copy of the same one)."""
    return [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "autoencoder"]


def record_sweep(p: Plan, eval_overrides: Sequence[str]) -> None:
    """Write (once, before p's checkpoint) the record done_before reads: the evaluate.py overrides it is scored
    with."""
    record = p.out.with_suffix(".sweep.json")
    if not record.exists():
        record.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(record, json.dumps({"evaluate": list(eval_overrides)}))


def table(rows: list[Scored], fd_key: str) -> str:
    """The sweep as a text table, best last line."""
    best = min(rows, key=lambda r: r.score)
    lines = [f"{'sigma_rel':>9}  {fd_key:>10}  checkpoint"]
    lines += [
        f"{r.sigma_rel:9.3f}  {r.score:10.4f}  {r.checkpoint}"
        for r in sorted(rows, key=lambda r: r.sigma_rel)
    ]
    lines.append(
        f"best: sigma_rel={sigma_rel_text(best.sigma_rel)} ({fd_key} {best.score:.4f}) -> {best.checkpoint}"
    )
    return "\n".join(lines)
