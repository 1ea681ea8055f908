"""Score a checkpoint or a folder of images: `python evaluate.py ckpt=<path> n=10000` (see README)."""

from pathlib import Path

from omegaconf import DictConfig

from difflab.run.cli import launch
from difflab.run.errors import exit_on_user_error


@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from difflab.run.evaluate_settings import (
        read_evaluate_settings,  # no torch yet: a bad value is one line at once
    )

    settings = read_evaluate_settings(cfg)
    from difflab.run.evaluate import evaluate_from  # torch loads once the settings hold

    evaluate_from(settings)


if __name__ == "__main__":
    launch(main, "eval", Path(__file__).resolve().parent / "conf")
