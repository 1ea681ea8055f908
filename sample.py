"""Sample from a checkpoint: `python sample.py ckpt=<path> n=64 sampler=ddim sampler.steps=50 out=<dir>`."""

from pathlib import Path

from omegaconf import DictConfig

from difflab.run.cli import launch
from difflab.run.errors import exit_on_user_error


@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from difflab.run.sample_settings import (
        read_sample_settings,  # no torch yet: a bad value is one line at once
    )

    settings = read_sample_settings(cfg)
    from difflab.run.sample import sample_from  # torch loads once the settings hold

    sample_from(settings)


if __name__ == "__main__":
    launch(main, "sample", Path(__file__).resolve().parent / "conf")
