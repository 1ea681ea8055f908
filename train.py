"""Train a diffusion model: `python train.py [group=option ...] [key=value ...]` (see README)."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from difflab.run import train
from difflab.run.common import optimized_metric
from difflab.run.errors import exit_on_user_error
from difflab.run.inherit import with_run_overrides
from difflab.run.wandb_glue import finish_wandb_run, name_wandb_run


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    """Train; return cfg.optimized_metric's final value for a sweeper (None when unset)."""
    name_wandb_run(cfg)
    try:
        metrics = train(cfg)
    except BaseException:
        finish_wandb_run(failed=True)  # so the next job of a sweep opens its own W&B run
        raise
    finish_wandb_run()
    return optimized_metric(cfg, metrics)


if __name__ == "__main__":
    # A resume reuses its run's overrides; DDP worker processes relaunched from this argv find nothing to add.
    try:
        argv = with_run_overrides(sys.argv, Path(__file__).resolve().parent / "conf")
    except ValueError as error:  # a run folder's overrides that a resume may not take: nothing has run
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if len(argv) > len(sys.argv):
        print(f"resuming with the run's own overrides: {' '.join(argv[1 : len(argv) - len(sys.argv) + 1])}")
    sys.argv = argv
    main()
