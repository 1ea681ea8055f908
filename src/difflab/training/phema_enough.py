"""How many post-hoc EMA snapshots a rebuild needs to be close, said at training start and at each rebuild, and a
σ_rel too far from the stored profiles to be fit closely, said at its rebuild: such a fit is written all the same,
with nothing in it showing how far off it is."""

from __future__ import annotations

import logging

log = logging.getLogger("difflab")

# On synthetic weight sequences (1,200 steps, linear and random walk, σ_rel 0.03-0.2) the rebuild's largest error,
# as a share of the sequence's range, was 12% from 1 snapshot, 3.4% from 4, 0.78% from 8, 0.49% from 10, 0.1% from
# 20: from 10 on it stays within the 0.5% the README states. EDM2 kept hundreds.
MIN_SNAPSHOTS = 10


def snapshots_written(max_steps: int, every_n_steps: int) -> int:
    """The snapshot files a run to `max_steps` writes: every `every_n_steps` steps and one at the end."""
    return max_steps // every_n_steps + (1 if max_steps % every_n_steps else 0)


def planned_steps(max_steps: int, max_epochs: int | None, estimated_steps: float) -> tuple[int, str] | None:
    """The optimizer steps a run will take and the limit that sets them (`trainer.max_steps=10`, or
    `trainer.max_epochs=2 (40 steps)` where only epochs limit it: before, such a run was never warned of);
    None where nothing limits the run. `estimated_steps`: Lightning's estimated_stepping_batches."""
    if max_steps > 0:
        return max_steps, f"trainer.max_steps={max_steps}"
    if max_epochs is not None and max_epochs > 0 and estimated_steps != float("inf"):
        return int(estimated_steps), f"trainer.max_epochs={max_epochs} ({int(estimated_steps)} steps)"
    return None


def warn_if_few_snapshots_planned(planned: tuple[int, str] | None, every_n_steps: int) -> None:
    """At training start: the run will write fewer than MIN_SNAPSHOTS snapshots (`planned`: planned_steps)."""
    if planned is None:
        return
    max_steps, limit = planned
    count = snapshots_written(max_steps, every_n_steps)
    if count < MIN_SNAPSHOTS:
        log.warning(
            "callbacks.phema.every_n_steps=%d with %s writes %d post-hoc EMA snapshot(s): a "
            "rebuild from fewer than %d is off by more than 0.5%% of the weights' range; choose "
            "callbacks.phema.every_n_steps=%d or less",
            every_n_steps,
            limit,
            count,
            MIN_SNAPSHOTS,
            max(1, max_steps // MIN_SNAPSHOTS),
        )


def warn_if_few_snapshots(count: int, sigma_rel: str, step: int) -> None:
    """At a rebuild: it rests on fewer than MIN_SNAPSHOTS snapshots."""
    if count < MIN_SNAPSHOTS:
        log.warning(
            "sigma_rel=%s is rebuilt from %d snapshot(s): fewer than %d can be off by more than 0.5%% of the "
            "weights' range; train with callbacks.phema.every_n_steps=%d or less to keep %d by step %d",
            sigma_rel,
            count,
            MIN_SNAPSHOTS,
            max(1, step // MIN_SNAPSHOTS),
            MIN_SNAPSHOTS,
            step,
        )


# The profile error (training/phema.profile_fit_error) above which a rebuild is said to be rough. With EDM2's stored
# σ_rel 0.05 and 0.10 and 40 snapshots, 0.02-0.25 stay under 3% and 0.01 is 13% off; from 10 snapshots 0.03-0.2
# stay under 8% and 0.02 is 21% off.
ROUGH_FIT = 0.10


def warn_if_far_from_stored(error: float, sigma_rel: str, stored: list[float]) -> None:
    """At a rebuild: the σ_rel's EMA profile is fit to within `error` only (its relative L² error)."""
    if error > ROUGH_FIT:
        log.warning(
            "sigma_rel=%s lies far from the stored profiles (sigma_rel %s): the snapshots fit its EMA profile only "
            "to within %.0f%%, so the rebuilt weights are a rough approximation; keep a stored sigma_rel near it "
            "(callbacks.phema.sigma_rels) or more snapshots (callbacks.phema.every_n_steps) to rebuild it closely",
            sigma_rel,
            ", ".join(f"{r:g}" for r in stored),
            100 * error,
        )
