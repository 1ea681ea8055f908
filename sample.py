"""Sample from a checkpoint: `python sample.py ckpt=<path> n=64 sampler=ddim sampler.steps=50 out=<dir>`."""

from pathlib import Path

from omegaconf import DictConfig

from difflab.run.cli import launch
from difflab.run.errors import exit_on_user_error


@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from difflab.run.sample import sample  # torch loads once the work starts

    sample(cfg)


if __name__ == "__main__":
    launch(main, "sample", Path(__file__).resolve().parent / "conf")
