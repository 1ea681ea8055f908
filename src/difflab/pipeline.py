"""`difflab.load(path)` → a DiffusionPipeline: a trained model in Python, sampled exactly as `sample.py` samples.

    pipe = difflab.load("outputs/train/<date>/<time>/checkpoints/last.ckpt")   # or an export.py safetensors folder
    images = pipe.sample(16, sampler="dpm_solver", steps=20, seed=0)          # uint8 (N, H, W, C)

Defaults are sample.py's own, read from the same files it composes (conf/sample.yaml and
conf/sampler/<name>.yaml), so the two cannot drift; sample i is sample.py's sample i for the same seed, sampler
and conditions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from .checkpoint import LoadedModel, load_model
from .diffusion import NoiseSchedule, Sampler
from .diffusion.precision import check_precision
from .generation import Generation, SampleOptions, request_for

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"  # the project's conf/, beside src/
OUTPUTS = ("uint8", "pil", "tensor")


def _conf_file(relative: str) -> Path:
    path = CONF_DIR / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: difflab reads sample.py's defaults from its conf/ folder (install difflab from "
            "its source checkout with pip install -e .)"
        )
    return path


def cli_defaults() -> dict[str, Any]:
    """sample.py's defaults (conf/sample.yaml): the sampler's name, seed, batch_size, guidance, precision."""
    conf = OmegaConf.load(_conf_file("sample.yaml"))
    choices = {k: v for entry in conf.defaults if OmegaConf.is_dict(entry) for k, v in entry.items()}
    keys = ("seed", "batch_size", "guidance", "precision")
    return {"sampler": choices["sampler"], **{k: conf[k] for k in keys}}


def sampler_config(name: str) -> Any:
    """conf/sampler/<name>.yaml, the partial that `sample.py sampler=<name>` instantiates."""
    if not (CONF_DIR / "sampler" / f"{name}.yaml").is_file() and CONF_DIR.is_dir():
        known = sorted(p.stem for p in (CONF_DIR / "sampler").glob("*.yaml"))
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(known)}")
    return OmegaConf.load(_conf_file(f"sampler/{name}.yaml"))


@dataclass
class DiffusionPipeline:
    """A trained denoiser (EMA weights when the run had EMA) with its schedule and what it is conditioned on."""

    net: nn.Module
    schedule: NoiseSchedule
    prediction_type: str
    condition: str | None  # None (unconditional) or "labels"
    num_classes: int | None
    sample_shape: tuple[int, int, int]  # (C, H, W)
    weights: str  # "ema" or "raw"
    global_step: int
    config: dict[str, Any]  # the model's stored config
    source: str = "<model>"

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, source: Any) -> DiffusionPipeline:
        return cls(
            loaded.net,
            loaded.schedule,
            loaded.prediction_type,
            loaded.condition,
            loaded.num_classes,
            loaded.sample_shape,
            loaded.weights,
            loaded.global_step,
            loaded.config,
            str(source),
        )

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> DiffusionPipeline:
        self.net.to(device)
        return self

    def make_sampler(self, name: str | None = None, **options: Any) -> Sampler:
        """Sampler `name` (sample.py's default when None) with its conf/sampler defaults, `options` overriding
        them (steps=20, eta=0.5, clip_x0=None, …), bound to this model's schedule and prediction type."""
        partial = instantiate(sampler_config(name or cli_defaults()["sampler"]))
        return partial(self.schedule, prediction_type=self.prediction_type, **options)

    def sample(
        self,
        n: int,
        sampler: str | None = None,
        steps: int | None = None,
        seed: int | None = None,
        labels: int | Sequence[int] | None = None,
        guidance: float | None = None,
        batch_size: int | str | None = None,
        output: str = "uint8",
        precision: str | None = None,
        **sampler_options: Any,
    ) -> Any:
        """n images, as `sample.py n=… sampler=… sampler.steps=… seed=… labels=… guidance=…` makes them.

        None takes sample.py's default (conf/sample.yaml: sampler ddim, seed 0, batch_size auto, guidance 1.0,
        precision fp32;
        steps and every other knob from conf/sampler/<name>.yaml). labels: one class or a list, n spread over
        them (None: every class, for a class-conditional model). output: "uint8" (numpy N×H×W×C, as
        samples.npz), "pil" (a list of PIL images) or "tensor" (floats in [-1, 1], N×C×H×W).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n} must be a whole number of at least 1")
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r}; choose one of {', '.join(OUTPUTS)}")
        defaults = cli_defaults()
        seed = defaults["seed"] if seed is None else seed
        batch_size = defaults["batch_size"] if batch_size is None else batch_size
        guidance = defaults["guidance"] if guidance is None else guidance
        precision = check_precision(defaults["precision"] if precision is None else precision)
        if steps is not None:
            sampler_options["steps"] = steps
        chosen = self.make_sampler(sampler, **sampler_options)
        options = SampleOptions("sample", n, seed, batch_size, precision, None, guidance, labels)
        images = Generation(request_for(self, options, chosen, self.source), self.net).images()
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"samples are not finite (NaN/inf): the weights in {self.source} are broken")
        return _convert(images, output)

    def __repr__(self) -> str:
        kind = "unconditional" if self.condition is None else f"conditioned on {self.condition}"
        return (
            f"DiffusionPipeline({self.source}: {type(self.net).__name__}, {self.schedule!r}, "
            f"prediction_type={self.prediction_type!r}, {kind}, images {self.sample_shape}, "
            f"{self.weights} weights, step {self.global_step})"
        )


def _convert(images: torch.Tensor, output: str) -> Any:
    if output == "tensor":
        return images
    from .io.images import to_uint8

    array = to_uint8(images).permute(0, 2, 3, 1).numpy()
    if output == "uint8":
        return array
    from PIL import Image

    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]


def load(
    path: str | Path, device: torch.device | str = "auto", allowed_targets: Iterable[str] = ()
) -> DiffusionPipeline:
    """A DiffusionPipeline from a train.py checkpoint (.ckpt) or an `export.py format=safetensors` folder.

    Read weights-only through difflab.checkpoint: only allowlisted targets are built (add your own model class
    with allowed_targets=[…] if you trust it). device "auto": CUDA when available, as sample.py."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return DiffusionPipeline.from_loaded(load_model(path, device, allowed_targets), path)
