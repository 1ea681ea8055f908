"""Score a checkpoint or a folder of images: `python evaluate.py ckpt=<path> n=10000` (see README)."""

import hydra
from omegaconf import DictConfig

from difflab.run import evaluate
from difflab.run.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    main()
