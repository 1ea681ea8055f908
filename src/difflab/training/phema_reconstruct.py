"""Rebuild, after training, the post-hoc EMA (EDM2) of any σ_rel from a run's snapshots as a normal checkpoint:
the least-squares combination of the snapshots' power-function EMA profiles (training/phema.py)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint_file import CONFIG_KEY, LATENT_RECORD_KEY, read_checkpoint, run_checkpoint
from ..io.atomic import atomic_file
from ..io.results import check_writable_file
from ..io.set_aside import set_aside
from .phema import (
    check_sigma_rel,
    profile_fit_error,
    reconstruction_coefficients,
    sigma_rel_to_gamma,
    weighted_sum,
)
from .phema_enough import warn_if_far_from_stored, warn_if_few_snapshots
from .phema_snapshots import SNAPSHOT_FOLDER, Snapshot, list_snapshots, read_snapshot

log = logging.getLogger("difflab")


@dataclass(frozen=True)
class Plan:
    """What one reconstruction reads and writes, checked before any work."""

    run: Path
    template: Path  # the run checkpoint whose config and non-network state the output keeps
    snapshots: list[Snapshot]
    step: int
    sigma_rel: float
    out: Path
    latest: bool = False  # step was not given: the run's latest snapshot
    # A latent run's autoencoder moved from where the run recorded it (checked to have its hash): recorded instead.
    autoencoder: str | None = None


def snapshots_of(run: Path, step: int | None) -> tuple[list[Snapshot], int]:
    """The run's snapshots up to `step` (default: its latest, which must be a snapshot step), and that step."""
    if run.is_file():  # a checkpoint of the run, say: the snapshots are found from its run folder
        raise ValueError(f"{run} is a file: give the run folder that holds {SNAPSHOT_FOLDER}/")
    if not run.is_dir():
        raise FileNotFoundError(f"run folder not found: {run}")
    found = list_snapshots(run / SNAPSHOT_FOLDER)
    if not found:
        raise ValueError(
            f"{run} has no post-hoc EMA snapshots ({SNAPSHOT_FOLDER}/step_*.pt); train with "
            "callbacks=[default,phema] to keep them"
        )
    steps = sorted({s.step for s in found})
    target = steps[-1] if step is None else int(step)
    if target not in steps:
        raise ValueError(f"step={target} is not a snapshot step of {run}; choose one of {_listed(steps)}")
    return [s for s in found if s.step <= target], target


def output_name(sigma_rel: float, step: int) -> str:
    """sigma_rel_<σ>_step_<step>.ckpt; by default in <run>/phema/, beside the snapshots and outside checkpoints/
    (which a resume reads)."""
    return f"sigma_rel_{sigma_rel_text(sigma_rel)}_step_{step:07d}.ckpt"


# A rebuild and what a sweep writes beside it (its record and scores).
_REBUILT = re.compile(r"sigma_rel_[^/]+_step_(\d{7,})\.(ckpt|sweep\.json|metrics\.json)")


def set_aside_later_rebuilds(folder: Path, step: int) -> Path | None:
    """A resume from `step` rewinds the run: the rebuilds of later steps in `folder` (<run>/phema) were made from
    snapshots of the abandoned continuation, so they move with them into <folder>/superseded_at_step_<step>/.
    Before, a sweep after the resume called them "scored before, kept" and a rebuild said "already exists"."""
    later = [
        p
        for p in sorted(folder.glob("sigma_rel_*_step_*"))
        if (m := _REBUILT.fullmatch(p.name)) and int(m.group(1)) > step
    ]
    return set_aside(later, folder, step)


def sigma_rel_text(sigma_rel: float) -> str:
    """σ_rel as files and reports name it: 3 decimals (0.070), more where 3 would change it (0.0701, 1e-09)."""
    short = f"{sigma_rel:.3f}"
    return short if float(short) == float(sigma_rel) else f"{sigma_rel:.6g}"


def plan(
    run: str | Path,
    sigma_rel: float,
    out: str | Path | None = None,
    step: int | None = None,
    folder: str | Path | None = None,
    existing: bool = False,
) -> Plan:
    """Check every input of a reconstruction (one-line errors) and its output: the file `out`, else
    output_name in `folder` (default <run>/phema); an existing file is never overwritten (`existing`: it may be
    there, made before by the caller's own earlier run, which checks that)."""
    check_sigma_rel(sigma_rel)
    run, asked = Path(run), step
    snapshots, step = snapshots_of(run, step)
    template = Path(run_checkpoint(run))
    if not template.is_file():
        raise FileNotFoundError(f"{run} has no checkpoints/last.ckpt to take the model's config from")
    target = Path(out) if out is not None else Path(folder or run / "phema") / output_name(sigma_rel, step)
    check_outside_checkpoints(run, target, out if out is not None else folder)
    if not (existing and target.is_file()):
        check_writable_file(target)
    return Plan(run, template, snapshots, step, sigma_rel, target, latest=asked is None)


def check_outside_checkpoints(run: Path, target: Path, given: str | Path | None) -> None:
    """A rebuild never goes into the run's checkpoints/ (a resume reads that folder, and it holds no optimizer):
    before, out=<run>/checkpoints/new.ckpt was written there."""
    checkpoints = (run / "checkpoints").resolve()
    if checkpoints in target.resolve().parents:
        raise ValueError(
            f"out={given} is inside {run / 'checkpoints'}, which a resume reads: leave out= out (the rebuild goes "
            f"to {run / 'phema'}) or give a file outside checkpoints/"
        )


def warn_if_snapshots_missing(
    p: Plan, config: dict, trained_to: int, every_since: list[tuple[int, int]] | None = None
) -> None:
    """Name the snapshot steps the run's every_n_steps should have left before p.step but that are gone (deleted,
    lost in a copy): the fit then rests on fewer, unevenly spaced profiles, which no result shows. A rebuild of
    the latest snapshot also says when the run trained past it (`trained_to`, last.ckpt's step): the final
    snapshot is gone, or the run stopped before writing it, and the result is an earlier step's average."""
    if p.latest and trained_to > p.step:
        log.warning(
            "%s trained to step %d but its latest snapshot is of step %d: sigma_rel=%s is rebuilt at step %d",
            p.run,
            trained_to,
            p.step,
            sigma_rel_text(p.sigma_rel),
            p.step,
        )
    spacing = every_since or []
    if not spacing:
        # A checkpoint older than the record: the run's latest spacing, taken for the whole run.
        every = ((config.get("callbacks") or {}).get("phema") or {}).get("every_n_steps")
        if not isinstance(every, int) or every < 1:
            return
        spacing = [(0, every)]
    present = {s.step for s in p.snapshots}
    ends = [start for start, _ in spacing[1:]] + [p.step]
    # Each stretch's multiples of its spacing after its start, up to the next stretch's start.
    due = [
        step
        for (start, every), end in zip(spacing, ends, strict=True)
        for step in range((start // every + 1) * every, min(end + 1, p.step), every)
    ]
    missing = [step for step in due if step not in present]
    if missing:
        shown = ", ".join(map(str, missing[:8])) + (", …" if len(missing) > 8 else "")
        said = (
            str(spacing[0][1])
            if len(spacing) == 1
            else ", ".join(f"{every} from step {start}" for start, every in spacing)
        )
        log.warning(
            "the snapshots of step(s) %s are missing from %s (every_n_steps=%s): sigma_rel=%s is fitted from the "
            "%d left",
            shown,
            p.run / SNAPSHOT_FOLDER,
            said,
            sigma_rel_text(p.sigma_rel),
            len(p.snapshots),
        )


def snapshot_spacing(ckpt: dict) -> list[tuple[int, int]] | None:
    """[(step, every_n_steps)] of each launch that changed the snapshot spacing, as the run's post-hoc EMA
    callback recorded it in the checkpoint; None for a checkpoint older than that record."""
    for state in (ckpt.get("callbacks") or {}).values():
        if isinstance(state, dict) and "every_since" in state:
            return [(int(step), int(every)) for step, every in state["every_since"]]
    return None


def reconstruct(p: Plan) -> Path:
    """Write the network whose EMA profile is the least-squares fit of σ_rel's from the snapshots, as a checkpoint
    that sample.py, evaluate.py and difflab.load read (weights only: no optimizer, not for resuming)."""
    ckpt = read_checkpoint(p.template)
    warn_if_snapshots_missing(p, ckpt[CONFIG_KEY], int(ckpt.get("global_step", 0)), snapshot_spacing(ckpt))
    warn_if_few_snapshots(len(p.snapshots), sigma_rel_text(p.sigma_rel), p.step)
    profiles = [(s, i, sigma_rel) for s in p.snapshots for i, sigma_rel in enumerate(s.sigma_rels)]
    steps = [s.step for s, _, _ in profiles]
    gammas = [sigma_rel_to_gamma(sigma_rel) for _, _, sigma_rel in profiles]
    fit = reconstruction_coefficients(steps, gammas, p.step, sigma_rel_to_gamma(p.sigma_rel))
    error = profile_fit_error(steps, gammas, p.step, sigma_rel_to_gamma(p.sigma_rel), fit)
    warn_if_far_from_stored(error, sigma_rel_text(p.sigma_rel), sorted({r for _, _, r in profiles}))
    coefficients = fit.tolist()
    by_file: dict[Snapshot, list[tuple[int, float]]] = {}
    for (snapshot, index, _), c in zip(profiles, coefficients, strict=True):
        by_file.setdefault(snapshot, []).append((index, c))

    def terms() -> Iterator[tuple[dict[str, torch.Tensor], float]]:
        for snapshot, wanted in by_file.items():  # each file read once, one at a time
            states = read_snapshot(snapshot.path, snapshot.sigma_rels)["states"]
            for index, c in wanted:
                yield states[index], c

    net = weighted_sum(terms())
    expected = {k[len("net.") :] for k in ckpt["state_dict"] if k.startswith("net.")}
    if set(net) != expected:
        raise ValueError(f"the snapshots of {p.run} do not hold the network of {p.template}")
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("net.")}
    state.update({f"net.{k}": v for k, v in net.items()})
    # A latent run's record of its autoencoder (hash, path, scale), without which no latent model is read.
    latent = {LATENT_RECORD_KEY: ckpt[LATENT_RECORD_KEY]} if LATENT_RECORD_KEY in ckpt else {}
    if latent and p.autoencoder is not None:  # sample.py then reads the moved copy without autoencoder=
        latent[LATENT_RECORD_KEY] = {**latent[LATENT_RECORD_KEY], "autoencoder_path": p.autoencoder}
    out = {
        **latent,
        "state_dict": state,
        CONFIG_KEY: ckpt[CONFIG_KEY],
        "global_step": p.step,
        "epoch": ckpt.get("epoch", 0),
        "pytorch-lightning_version": ckpt.get("pytorch-lightning_version"),
        "weights": f"post-hoc EMA sigma_rel={sigma_rel_text(p.sigma_rel)}",
        "phema": {
            "sigma_rel": p.sigma_rel,
            "gamma": sigma_rel_to_gamma(p.sigma_rel),
            "step": p.step,
            "snapshots": [
                {"step": s.step, "sigma_rel": r, "coefficient": c}
                for (s, _, r), c in zip(profiles, coefficients, strict=True)
            ],
        },
    }
    p.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(p.out, exclusive=True) as file:  # never over a file that appeared meanwhile
        torch.save(out, file)
    log.info(
        "post-hoc EMA sigma_rel=%s at step %d from %d snapshot(s) -> %s",
        sigma_rel_text(p.sigma_rel),
        p.step,
        len(p.snapshots),
        p.out,
    )
    return p.out


def _listed(steps: list[int]) -> str:
    return (
        ", ".join(map(str, steps)) if len(steps) <= 8 else f"{', '.join(map(str, steps[:3]))}, …, {steps[-1]}"
    )
