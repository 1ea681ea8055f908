"""Sample from a checkpoint: `python sample.py ckpt=<path> n=64 sampler=ddim sampler.steps=50 out=<dir>`."""

import hydra
from omegaconf import DictConfig

from difflab.run import sample
from difflab.run.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="sample")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    sample(cfg)


if __name__ == "__main__":
    main()
