"""Export a checkpoint: `python export.py ckpt=<path> format=diffusers|safetensors out=<dir>` (see README)."""

from pathlib import Path

from omegaconf import DictConfig

from difflab.run.cli import launch
from difflab.run.errors import exit_on_user_error


@exit_on_user_error
def main(cfg: DictConfig) -> None:
    from difflab.run.export import export  # torch loads once the work starts

    export(cfg)


if __name__ == "__main__":
    launch(main, "export", Path(__file__).resolve().parent / "conf")
