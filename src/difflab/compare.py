"""Compare runs: loss and scores against steps, one line per run, from the metrics.jsonl every train run writes
(whatever its loggers), saved as one PNG.

    python -m difflab.compare multirun/train/<date>/<time> --out compare.png
    python -m difflab.compare outputs/train/<a> outputs/train/<b> --metrics train/loss val/fd_effl0

A folder that holds no logs of its own but run folders (a sweep) stands for all of them. Each line is named by
the overrides that differ between the runs (`optim.lr=1e-4,schedule=cosine`).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import re
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from .runlogs import METRICS_FILE, Series, run_series
from .runs.inherit import latest_overrides_file, stored_overrides
from .tracking.run_names import says_where_not_what

DEFAULT_METRICS = ("train/loss", "val/loss", "val/fd_effl0", "val/fid")


def _has_logs(folder: Path) -> bool:
    return (folder / METRICS_FILE).is_file()


def _is_run(folder: Path) -> bool:
    # Its metrics file too: a run with hydra.output_subdir=null and no checkpoint has nothing else.
    return (folder / ".hydra").is_dir() or (folder / "checkpoints").is_dir() or _has_logs(folder)


def number_order(path: Path) -> list[Any]:
    """A sort key that puts a sweep's job folders 2 before 10 (numbers in a name compared as numbers)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name)]


def find_runs(paths: list[Path]) -> list[Path]:
    """The run folders among `paths`: each path that is a run (.hydra/, checkpoints/ or logs) with logs, else its subfolders
    that are runs with logs (a sweep's job folders)."""
    runs = []
    for path in paths:
        if not path.is_dir():
            raise ValueError(f"not a folder: {path}")
        if _is_run(path) and _has_logs(path):
            runs.append(path)
            continue
        jobs = runs_below(path)
        found = [p for p in jobs if _has_logs(p)]
        if not found and _has_logs(path):
            found = [path]
        if not found:  # a run refused before its first step, or a folder of no runs
            raise ValueError(
                f"{path} holds no run logs (the {METRICS_FILE} every train run writes, but for debug=fdr, which "
                "logs nothing, and a run refused before its first step)"
            )
        if left_out := [p for p in jobs if p not in found]:  # before, left out without a word
            names = ", ".join(str(p.relative_to(path)) for p in left_out)
            print(
                f"warning: {path}: run(s) {names} hold no {METRICS_FILE} (refused or failed before their first "
                "step): left out",
                file=sys.stderr,
            )
        runs.extend(found)
    return _each_once(runs)


def runs_below(folder: Path) -> list[Path]:
    """The run folders inside `folder` at any depth, in number order: a sweep's jobs, also where
    hydra.sweep.subdir nests them (<sweep>/lr=1e-3/seed=1; before, only its direct subfolders were looked at).
    A run's own subfolders are not searched, nor hidden ones (.hydra, .submitit)."""
    found = []
    for child in sorted(folder.iterdir(), key=number_order):
        if not child.is_dir() or child.name.startswith("."):
            continue
        found.extend([child] if _is_run(child) else runs_below(child))
    return found


def _each_once(runs: list[Path]) -> list[Path]:
    """The runs in the order given, a folder named twice (or also found in its sweep) kept the first time: two
    runs with one label would draw one line and count as two."""
    seen: set[Path] = set()
    kept = []
    for run in runs:
        if run.resolve() not in seen:
            seen.add(run.resolve())
            kept.append(run)
    return kept


def run_label(run: Path, runs: list[Path]) -> str:
    """The shortest name that tells the run apart: its folder name, or its path below the runs' common folder
    (sweep/0 and other_sweep/0; before, "0" and "other_sweep/0")."""
    names = [r.name for r in runs]
    if names.count(run.name) == 1:
        return run.name
    return place(run, runs)


def place(run: Path, runs: list[Path]) -> str:
    """The run's path below the runs' common folder (sweep/1), or its whole path where they share none."""
    common = Path(os.path.commonpath([r.resolve() for r in runs]))
    return str(run.resolve().relative_to(common)) if common in run.resolve().parents else str(run)


def run_overrides(run: Path) -> dict[str, str | None] | None:
    """The command-line overrides of the run's latest launch (its first, or its latest resume's, which holds its
    whole recipe), {key: value} from Hydra's overrides.yaml (None for a deletion, ~key); None for a folder Hydra
    did not make."""
    path = latest_overrides_file(run)
    if not path.is_file():
        return None
    try:
        stored = stored_overrides(run)  # the file a resume reads, read as it reads it
    except ValueError:  # before, a traceback (or a codec's words alone)
        print(
            f"warning: {path} is not a list of overrides (not a YAML list of strings): {run} is named by its folder",
            file=sys.stderr,
        )
        return None
    pairs = (str(item).partition("=") for item in stored or [])
    # +x=1 and x=1 set the same key; ~x (and ~x=1, deleted where it is 1) deletes it: before, labelled "x=".
    overrides: dict[str, str | None] = {
        key.lstrip("+~"): None if key.startswith("~") else value for key, _, value in pairs
    }
    overrides.pop("ckpt_path", None)  # how a launch went on (a resume), not what the run is
    return overrides


def settings_in_run(run: Path, keys: list[str]) -> dict[str, str]:
    """What the run used for keys its launch did not override: the option chosen for a config group
    (hydra.yaml's runtime choices), else the value in its composed config (config.yaml), both of the launch whose
    overrides label it; a key the run's folder says neither of is left out. A null is said as Hydra reads it
    back, `null` (review: "experiment=None"). Each file is read once, whatever the number of keys."""
    launch = latest_overrides_file(run).parent  # .hydra, or a resume's .hydra/resumed_step_<step>
    choices, config = _read(launch / "hydra.yaml"), _read(launch / "config.yaml")
    missing = object()
    used = {}
    for key in keys:
        value = OmegaConf.select(choices, f"hydra.runtime.choices.{key}", default=missing)
        if value is missing:
            value = OmegaConf.select(config, key, default=missing)
        if value is not missing and not OmegaConf.is_config(value):
            used[key] = "null" if value is None else str(value)
    return used


def _read(path: Path) -> Any:
    """A YAML file Hydra wrote; an empty config where the file is not there or is not one Hydra wrote."""
    try:
        loaded = OmegaConf.load(path)
    except Exception:  # no such file, or one Hydra did not write
        return OmegaConf.create()
    return loaded if isinstance(loaded, DictConfig) else OmegaConf.create()


@functools.cache
def _override_parser() -> OverridesParser:
    return OverridesParser.create()  # builds Hydra's grammar: once, not per run and key


def _said(key: str, value: str | None) -> str:
    """`key=value` as a label says it; a deletion as typed, `~key`."""
    return f"~{key}" if value is None else f"{key}={value}"


def _meaning(key: str, text: str | None) -> str:
    """What Hydra reads from `text`, so that false and False, 1e-4 and 0.0001 are one value; else the text."""
    if text is None:
        return "~"  # deleted
    try:
        return repr(_override_parser().parse_override(f"{key}={text}").value())
    except Exception:  # an override Hydra's grammar cannot read: compared as written
        return text


def run_labels(runs: list[Path]) -> list[str]:
    """A label per run: the overrides that differ between the runs (`optim.lr=1e-4,schedule=cosine`), else, where
    that does not tell them apart, the folder name (run_label)."""
    overrides = [o for o in map(run_overrides, runs) if o is not None]
    if len(runs) > 1 and len(overrides) == len(runs):
        keys = sorted({key for o in overrides for key in o})
        for run, o in zip(runs, overrides, strict=True):
            # A key one run set and another left at its default: the default said (before, an empty label, so
            # every line fell back to its folder name, or a key that differed only in spelling was named).
            o.update(settings_in_run(run, [key for key in keys if key not in o]))
        differ = [
            key for key in keys if len({_meaning(key, o[key]) if key in o else None for o in overrides}) > 1
        ]
        labels = [",".join(_said(key, o[key]) for key in differ if key in o) for o in overrides]
        # What the runs train (optim.lr=…) without where they ran (metrics.cache_dir=…, logger=csv), where
        # that still tells them apart.
        trained = [key for key in differ if not says_where_not_what(key)]
        trained_labels = [",".join(_said(key, o[key]) for key in trained if key in o) for o in overrides]
        if all(trained_labels) and _tell_apart(overrides, trained):
            labels = trained_labels
        # Told apart by what Hydra reads (before, by the text: optim.lr=0.0001 and optim.lr=1e-4 as two settings).
        if all(labels) and _tell_apart(overrides, differ):
            return labels
        if all(labels):  # the same settings in two places (two sweeps): both said (before, the folder alone)
            return [f"{place(run, runs)}: {label}" for run, label in zip(runs, labels, strict=True)]
    return [run_label(run, runs) for run in runs]


def _tell_apart(overrides: list[dict[str, str | None]], keys: list[str]) -> bool:
    """Whether no two runs set `keys` to the same values, compared by meaning."""
    meanings = {tuple(_meaning(key, o[key]) if key in o else None for key in keys) for o in overrides}
    return len(meanings) == len(overrides)


def plot(series: dict[str, Series], metrics: list[str], out: Path) -> list[str]:
    """One panel per metric that any run logged, saved to `out`; returns the metrics drawn."""
    fig, drawn = figure(series, metrics)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return drawn


def loss_axis(ax: Any, values: list[float]) -> None:
    """A log axis for a loss that falls by more than a factor 3 over the runs, its ticks in plain numbers (0.1, 0.3;
    within a decade its minor ticks too); a narrower span keeps the linear axis, whose own labels tell close values
    apart. Before, every loss panel was a log axis labelled 1e+00 at both 0.98 and 0.96, 6e-01 for 0.6."""
    import matplotlib.ticker

    positive = [value for value in values if value > 0]
    if not positive or len(positive) < len(values) or max(positive) <= 3 * min(positive):
        return
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    within_a_decade = max(positive) < 10 * min(positive)
    ax.yaxis.set_minor_formatter(plain if within_a_decade else matplotlib.ticker.NullFormatter())


def figure(series: dict[str, Series], metrics: list[str]) -> tuple[Any, list[str]]:
    """(the figure, the metrics drawn): a panel per metric any run logged, each run in one colour throughout."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [m for m in metrics if any(m in s for s in series.values())]
    if not drawn:
        logged = sorted({k for s in series.values() for k in s})
        raise ValueError(f"none of {', '.join(metrics)} was logged; logged: {', '.join(logged) or 'nothing'}")
    # Fixed per run: left to matplotlib, a panel's colours follow the runs that logged its metric, so a run
    # without it gave its colour (and legend entry) to the next run's points.
    colors = run_colors(len(series))
    fig, axes = plt.subplots(1, len(drawn), figsize=(5 * len(drawn), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], drawn, strict=True):
        for color, (label, runs_series) in zip(colors, series.items(), strict=True):
            points = runs_series.get(metric)
            if points:
                steps, values = zip(*points, strict=True)
                ax.plot(steps, values, marker="o" if len(points) < 12 else None, label=label, color=color)
        ax.set_title(metric)
        ax.set_xlabel("step")
        if metric.endswith("loss"):
            loss_axis(
                ax, [value for runs_series in series.values() for _, value in runs_series.get(metric, [])]
            )
        ax.grid(alpha=0.3)
    # Below the panels, not on the first one: labels of a sweep's overrides are long enough to hide its lines.
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    fig.tight_layout()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), fontsize=8, frameon=False)
    return fig, drawn


def run_colors(n: int) -> list[Any]:
    """n distinct colours: matplotlib's default ten, then tab20, then points along viridis."""
    import matplotlib

    if n <= 10:
        return list(matplotlib.colormaps["tab10"].colors[:n])
    if n <= 20:
        return list(matplotlib.colormaps["tab20"].colors[:n])
    return [matplotlib.colormaps["viridis"](i / (n - 1)) for i in range(n)]


def check_out(out: Path) -> None:
    """--out must be a new file in a folder that is, or can be made: one line before the logs are read."""
    if out.exists():
        raise ValueError(f"{out} already exists; choose another --out")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"cannot write {out}: {parent} is a file, not a folder")
            break


def default_out() -> Path:
    """compare.png in the working folder, else compare_2.png, …: a rerun neither fails nor overwrites the last plot
    (an --out given is a new file or refused)."""
    for n in itertools.count(1):
        path = Path("compare.png" if n == 1 else f"compare_{n}.png")
        if not path.exists():
            return path
    raise AssertionError("unreachable")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m difflab.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, or sweep folders holding them")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS), help="metrics to plot")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the PNG to write (a new file; default: compare.png, else compare_2.png, …)",
    )
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = default_out()
    elif not args.out.suffix:  # matplotlib would write <out>.png, unchecked (before: overwritten, misnamed)
        args.out = args.out.with_suffix(".png")
    try:
        runs = find_runs(args.runs)
        labels = run_labels(runs)
        series = {label: run_series(run) for label, run in zip(labels, runs, strict=True)}
        check_out(args.out)
        drawn = plot(series, args.metrics, args.out)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # a folder that cannot be written after all (permissions, a full disk)
        print(f"error: cannot write {args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    for label, run in zip(labels, runs, strict=True):
        if label != run_label(run, runs):  # say which folder a line named by its overrides comes from
            print(f"{label}: {run}")
        if not any(series[label].get(metric) for metric in drawn):  # counted below, but drawn nowhere
            print(
                f"warning: {label} logged no finite value of {', '.join(drawn)}: it has no line",
                file=sys.stderr,
            )
    print(f"{len(runs)} run{'s' if len(runs) > 1 else ''}, {', '.join(drawn)} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
