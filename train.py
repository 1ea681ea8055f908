"""Train a diffusion model: `python train.py [group=option ...] [key=value ...]` (see README)."""

import hydra
from omegaconf import DictConfig

from difflab.run import train
from difflab.run.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
