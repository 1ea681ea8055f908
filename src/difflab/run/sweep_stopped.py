"""What a stop that ends a sweep leaves, for its one line: whether the sweep began and submits its jobs to a
cluster (they go on there), and, where its jobs run in this process (Hydra's basic launcher), which never ran: a
SIGTERM or Ctrl-C in job #0 of 4 ends the whole sweep. Before, jobs #1-#3 were dropped without a word, and a rerun
into the same sweep folder is refused (it holds job #0's run)."""

from __future__ import annotations

import itertools
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

# The sweep this process runs: whether it began (its checks passed) and submits its jobs to a cluster, each job's
# swept overrides where its jobs run here (a search's trials: None each), the last job started.
_sweep: dict[str, Any] = {"began": False, "submits": False, "jobs": [], "started": None}

# Jobs named in the line; more are counted.
NAMED = 3


def note_sweep(config: DictConfig) -> None:
    """At the sweep's start (on_multirun_start, once its checks passed): how its jobs run, and what each of those
    run here will set."""
    launcher = str(OmegaConf.select(config, "hydra.launcher._target_", default=""))
    _sweep.update(began=True, submits="SlurmLauncher" in launcher, jobs=[], started=None)
    if not launcher.endswith("BasicLauncher"):  # its jobs run elsewhere, and go on there
        return
    sweeper = OmegaConf.select(config, "hydra.sweeper") or {}
    if "n_trials" in sweeper:  # a search: its trials' values are drawn as it goes
        _sweep["jobs"] = [None] * int(sweeper.n_trials)
    else:
        _sweep["jobs"] = _basic_sweep_jobs(config)


def sweep_began() -> bool:
    return bool(_sweep["began"])


def submits_jobs() -> bool:
    """Whether this sweep submits its jobs to a cluster (hydra/launcher=slurm, from the command line or a config)."""
    return bool(_sweep["submits"])


def _basic_sweep_jobs(config: DictConfig) -> list[str | None]:
    """The swept overrides of each job, in the order Hydra's basic sweeper runs them (the product of the swept
    values, key by key as first given; hydra.sweeper.params first)."""
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    lines = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    # Each key in the place it was first given, its last value kept, as Hydra's ordered dict of overrides does; a
    # single value is the same in every job and not named.
    choices: dict[str, list[str]] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        if override.is_sweep_override() and override.is_discrete_sweep():
            choices[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            choices[key] = [""]
    return [" ".join(part for part in job if part) for job in itertools.product(*choices.values())]


def note_job_started() -> None:
    """In each job: the sweep has got this far."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        _sweep["started"] = int(HydraConfig.get().job.num)


def jobs_not_run() -> str | None:
    """Which jobs of this process's sweep never started (after the last one that did), for the line a stop ends
    with; None outside such a sweep, or when none is left."""
    started, jobs = _sweep["started"], _sweep["jobs"]
    left = list(enumerate(jobs))[0 if started is None else started + 1 :]
    if not left:
        return None
    kind = "trials" if jobs[0] is None else "jobs"
    named = ", ".join(f"#{n}" + (f" ({job})" if job else "") for n, job in left[:NAMED])
    more = f" and {len(left) - NAMED} more" if len(left) > NAMED else ""
    return (
        f"{len(left)} of the sweep's {len(jobs)} {kind} did not run: {named}{more}; sweep them again into a new "
        "hydra.sweep.dir"
    )
