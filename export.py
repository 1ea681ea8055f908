"""Export a checkpoint: `python export.py ckpt=<path> format=diffusers|safetensors out=<dir>` (see README)."""

import hydra
from omegaconf import DictConfig

from difflab.run import export
from difflab.run.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
