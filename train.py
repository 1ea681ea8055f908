"""Train a diffusion model: `python train.py [group=option ...] [key=value ...]` (see README)."""

from pathlib import Path

from omegaconf import DictConfig

from difflab.run.cli import launch
from difflab.run.errors import exit_on_user_error


@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    """Train; return cfg.optimized_metric's final value for a sweeper (None when unset)."""
    from difflab.run.train import train_command  # torch and Lightning load once a run starts

    return train_command(cfg)


if __name__ == "__main__":
    # A resume (ckpt_path=…) starts from its run's own overrides; so does each DDP process Lightning relaunches.
    launch(main, "train", Path(__file__).resolve().parent / "conf", inherit=True)
