"""An Optuna search (hparams_search) whose every trial failed: one line saying so and where the trials' logs are.
Before, optuna's traceback ("ValueError: No trials are completed yet.") after the trials' own errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

from omegaconf import DictConfig


def every_trial_failed(config: DictConfig, trials: int) -> NoReturn:
    sweep_dir = Path(str(config.hydra.sweep.dir))
    print(
        f"error: every trial of the search failed ({trials} of {trials}), so it has no best parameters: their "
        f"errors are above and in {sweep_dir}/<trial>/train.log; fix the cause and search again",
        file=sys.stderr,
    )
    # As a sweep whose jobs all failed ends (README "A failed job does not stop the sweep").
    raise SystemExit(1)
