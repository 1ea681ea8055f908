"""evaluate.py's report: where it goes, decided before any work (never over an earlier report, never in a folder
that cannot be written), and how it names the images it scored against."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from ..checkpoint_file import checkpoint_run_folder
from ..io.results import check_writable_file, first_free


def report_path(out: str | None, ckpt: str | None, root_dir: str) -> Path:
    """Where the JSON goes: out=; else the checkpoint's run folder (<run>/metrics.json, or metrics_2.json, …
    beside earlier reports), also when ckpt= is the run folder itself or a post-hoc EMA rebuild in it; else outputs/evaluate/<date>_<time>.json.
    Checked before any work: an existing out= is never overwritten, a folder that cannot be written is refused.
    An out= that is a folder (or ends with /) gets metrics.json in it (metrics_2.json, …): before, an existing
    folder was refused as "already exists" and `out=new/` wrote a file named `new`."""
    if out and (str(out).endswith(("/", os.sep)) or Path(out).is_dir()):
        path = first_free(Path(out) / "metrics.json")
    elif out:
        path = Path(out)
    else:
        run = (checkpoint_run_folder(ckpt) or rebuilt_in_run_folder(ckpt)) if ckpt else None
        if run is not None:
            path = run / "metrics.json"
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


def chosen_for_the_user(out: str | None, path: Path) -> bool:
    """Whether report_path chose `path` (no out=, or out= a folder): another name will do if it is taken
    meanwhile, where a file the user named must not be."""
    return not out or Path(out) != path


def rebuilt_in_run_folder(ckpt: str) -> Path | None:
    """The run folder of a post-hoc EMA rebuild in its default place, <run>/phema/<file>.ckpt (python -m
    difflab.phema): before, its report went to outputs/evaluate/ in whatever folder evaluate.py started from."""
    path = Path(ckpt)
    run = path.parent.parent
    return run if path.parent.name == "phema" and (run / "checkpoints").is_dir() else None


def reference_entry(data: Any, split: str, num_images: int, cache_hit: bool) -> dict[str, Any]:
    """The report's "reference": the dataset, split and size the scores compare with, and whether its statistics
    came from the cache."""
    return {
        "dataset": data.dataset,
        "root": None if data.root is None else str(data.root),
        "split": split,
        "num_images": num_images,
        "image_size": data.image_size,
        "channels": data.channels,
        "cache_hit": cache_hit,
    }
