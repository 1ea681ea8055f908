"""Where evaluate.py's report goes, decided before any work: never over an earlier report, never in a folder that
cannot be written."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ..io.results import check_writable_file, first_free


def report_path(out: str | None, ckpt: str | None, root_dir: str) -> Path:
    """Where the JSON goes: out=; else the checkpoint's run folder (<run>/metrics.json, or metrics_2.json, …
    beside earlier reports); else outputs/evaluate/<date>_<time>.json. Checked before any work: an existing
    out= is never overwritten, a folder that cannot be written is refused."""
    if out:
        path = Path(out)
    else:
        if ckpt and Path(ckpt).parent.name == "checkpoints":
            path = Path(ckpt).parent.parent / "metrics.json"
        else:
            path = (
                Path(root_dir)
                / "outputs"
                / "evaluate"
                / f"{datetime.now().strftime('%Y-%m-%d_%H-%M-%S')}.json"
            )
        path = first_free(path)
    check_writable_file(path)
    return path
