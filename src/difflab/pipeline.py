"""`difflab.load(path)` → a DiffusionPipeline: a trained model in Python, sampled exactly as `sample.py` samples.

    pipe = difflab.load("outputs/train/<date>/<time>/checkpoints/last.ckpt")   # or an export.py safetensors folder
    images = pipe.sample(16, sampler="dpm_solver", steps=20, seed=0)          # uint8 (N, H, W, C)
    pipe.sample(4, mode="superres", image="low.png")                          # every mode sample.py has

pipe.sample takes every key sample.py takes, under the same names, with sample.py's defaults (read from the files it
composes, see pipeline_arguments); both build the same difflab.generation request and run the same call, so sample i
is sample.py's sample i for the same arguments.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import get_class
from torch import nn

from .checkpoint import LoadedModel, load_model
from .cluster.devices import pick_device
from .diffusion import NoiseSchedule, Sampler
from .diffusion.precision import check_precision
from .generation import SampleOptions, build_sampler, generate_images, request_for
from .generation.finite import check_finite
from .generation.memory import check_images_fit
from .pipeline_arguments import (
    cli_defaults,
    refuse_unknown,
    refuse_unknown_inpaint,
    sampler_config,
    sampler_knobs,
)
from .sample_options import refuse_sampler_settings
from .value_rules import INPAINT_RULES, SAMPLER_RULES, check_named

OUTPUTS = ("uint8", "pil", "tensor")


@dataclass
class DiffusionPipeline:
    """A trained denoiser (EMA weights when the run had EMA) with its schedule and what it is conditioned on."""

    net: nn.Module
    schedule: NoiseSchedule
    prediction_type: str
    condition: str | None  # None (unconditional), "labels", "text" or "superres"
    num_classes: int | None
    sample_shape: tuple[int, int, int]  # (C, H, W)
    weights: str  # "ema" or "raw"
    global_step: int
    config: dict[str, Any]  # the model's stored config
    source: str = "<model>"
    latents: Any = None  # latent diffusion: its LatentSpace (samples are decoded through its autoencoder)
    formulation: str = "vp"  # what trained it: vp, edm or flow (net is then its ε-face on `schedule`)

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, source: Any) -> DiffusionPipeline:
        return cls(
            loaded.sampling_net,
            loaded.schedule,
            loaded.prediction_type,
            loaded.condition,
            loaded.num_classes,
            loaded.sample_shape,
            loaded.weights,
            loaded.global_step,
            loaded.config,
            str(source),
            loaded.latents,
            getattr(loaded.formulation, "name", "vp"),  # None: a checkpoint from before formulations, VP
        )

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: torch.device | str) -> DiffusionPipeline:
        """The pipeline on `device` ("cpu", "cuda:1", a torch.device; a one-line error for one this machine
        has not, as load(device=) gives)."""
        self.net.to(pick_device(str(device)))
        return self

    def make_sampler(self, name: str | None = None, **options: Any) -> Sampler:
        """Sampler `name` (sample.py's default when None) with its conf/sampler defaults, `options` overriding
        them (steps=20, eta=0.5, clip_x0=None, …), bound to this model's schedule and prediction type."""
        name = name or cli_defaults()["sampler"]
        config = sampler_config(name)
        knobs = sampler_knobs(get_class(config["_target_"]))
        refuse_unknown(options, SAMPLE_ARGUMENTS, knobs, f"the {name} sampler")
        check_named(options, SAMPLER_RULES)  # steps="abc": Python's own int() error named no argument
        return build_sampler(config, self, **options)

    def sample(
        self,
        n: int | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        seed: int | None = None,
        labels: int | Sequence[int] | None = None,  # or a numpy array or torch tensor of them
        guidance: float | None = None,
        batch_size: int | str | None = None,
        output: str = "uint8",
        precision: str | None = None,
        *,
        mode: str | None = None,
        prompt: str | Sequence[str] | None = None,
        negative_prompt: str | None = None,
        image: str | Path | None = None,
        mask: str | Path | None = None,
        strength: float | None = None,
        inpaint: Mapping[str, int] | None = None,
        consistency: bool | None = None,
        cpu_threads: int | str | None = None,
        guide: str | Path | DiffusionPipeline | None = None,
        **sampler_options: Any,
    ) -> Any:
        """n images, as `sample.py n=… <key>=…` makes them: the same request, generated by the same call.

        Every sample.py key under its own name: labels= (one class or a list, n spread over them), prompt= and
        negative_prompt= (text-to-image), guidance=, mode="inpaint" with image= and mask= (a file or a folder;
        inpaint={"steps": …, "jump_length": …, "jump_n_sample": …}), mode="img2img" with image= and strength=,
        mode="superres" with image= (n outputs per picture; consistency=True for superres.consistency=true),
        seed=, batch_size=, precision=, cpu_threads=; sampler="ddim" and its knobs (steps=, eta=, clip_x0=, …);
        guide= (a weaker model's path, or a DiffusionPipeline) for autoguidance at scale guidance=.
        None takes sample.py's default (conf/sample.yaml, conf/sampler/<name>.yaml): n=64, and seed=0, so a call
        without seed= gives the same images each time (seed=… for others; sample i depends on (seed, i) only, as
        in sample.py, not on a global random state). An unknown keyword is one
        line naming it. output: "uint8" (numpy N×H×W×C, as samples.npz), "pil" (a list of PIL images) or
        "tensor" (floats in [-1, 1], N×C×H×W).
        """
        # A NumPy number (np.int64 from an array, np.float32) is taken as the Python number it holds.
        n, seed, steps, guidance, strength = (plain_number(v) for v in (n, seed, steps, guidance, strength))
        defaults = cli_defaults()
        if n is None:  # before, Python's "missing 1 required positional argument: 'n'"
            n = defaults["n"]
        sampler_options = {key: plain_number(value) for key, value in sampler_options.items()}
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r} must be a whole number of at least 1")
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r}; choose one of {', '.join(OUTPUTS)}")
        given = {
            "mode": mode,
            "seed": seed,
            "batch_size": batch_size,
            "precision": precision,
            "cpu_threads": cpu_threads,
            "guidance": guidance,
            "labels": labels,
            "prompt": prompt,
            "negative_prompt": negative_prompt,
            "image": image,
            "mask": mask,
            "strength": strength,
            "consistency": consistency,
        }
        values = {key: defaults[key] if value is None else value for key, value in given.items()}
        # sample.py's default strength is img2img's: only one given to another mode is refused there.
        if strength is None and values["mode"] != "img2img":
            values["strength"] = None
        refuse_unknown_inpaint(inpaint or {}, list(defaults["inpaint"]))
        check_named({f"inpaint.{k}": v for k, v in (inpaint or {}).items()}, INPAINT_RULES)
        # sample.py's defaults are inpaint's: settings given to another mode are refused
        values["inpaint"] = (
            {**defaults["inpaint"], **(inpaint or {})} if values["mode"] == "inpaint" else inpaint
        )
        check_precision(values["precision"])
        # The guide is named before the checks, which read it (before, set after them: a super-resolution model's
        # guide= was refused as "drop guidance= (or guide with a weaker model: guide=)").
        guide_name = guide.source if isinstance(guide, DiffusionPipeline) else guide
        options = SampleOptions(n=n, guide=None if guide_name is None else str(guide_name), **values)
        options.check()
        check_images_fit(int(options.n), tuple(self.sample_shape))  # returned at once: n per picture
        if steps is not None:
            sampler_options["steps"] = steps
        chosen_by_name = [] if sampler is None else [f"sampler={sampler!r}"]
        refuse_sampler_settings(
            options.mode, chosen_by_name + [f"{k}={v!r}" for k, v in sampler_options.items()]
        )
        chosen = self.make_sampler(sampler, **sampler_options)
        guide_model = None
        if guide is not None:
            guide_model = guide if isinstance(guide, DiffusionPipeline) else load(guide, self.device)
            options.guide = guide_model.source
        request = request_for(self, options, chosen, self.source, guide_model)
        # Editing makes n of each picture: before, n alone was checked (600 of 3 pictures came back as 1,800).
        pictures = len(request.indices) // max(int(options.n), 1)
        check_images_fit(int(options.n), tuple(self.sample_shape), pictures)
        images = generate_images(request, self.net)
        # Nothing is written here: the caller is told it gets no images.
        check_finite(images, self.source, guidance=options.guidance, outcome="no images were returned")
        return _convert(images, output)

    def __repr__(self) -> str:
        kind = "unconditional" if self.condition is None else f"conditioned on {self.condition}"
        network = getattr(self.net, "net", self.net)  # an EDM or flow model's own network, not its ε-face
        space = (
            ""
            if self.latents is None
            else f" (in the latents of autoencoder {self.latents.autoencoder.weights_hash[:12]})"
        )
        sampled = f"sampled as {self.schedule!r}, prediction_type={self.prediction_type!r}"
        return (
            f"DiffusionPipeline({self.source}: {type(network).__name__}, formulation={self.formulation}, "
            f"{sampled}, {kind}, images {self.sample_shape}{space}, {self.weights} weights, step {self.global_step})"
        )


# pipe.sample's own arguments (sampler knobs come on top), named in its one-line refusals.
SAMPLE_ARGUMENTS = [
    p for p in inspect.signature(DiffusionPipeline.sample).parameters if p not in ("self", "sampler_options")
]


def _convert(images: torch.Tensor, output: str) -> Any:
    if output == "tensor":
        return images
    from .io.write_images import to_uint8

    array = to_uint8(images).permute(0, 2, 3, 1).numpy()
    if output == "uint8":
        return array
    from PIL import Image

    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in array]


def load(
    path: str | Path,
    device: torch.device | str = "auto",
    allowed_targets: Iterable[str] = (),
    autoencoder: str | Path | None = None,
) -> DiffusionPipeline:
    """A DiffusionPipeline from a train.py checkpoint (.ckpt), a train.py run folder (its checkpoints/last.ckpt),
    an `export.py format=safetensors` folder or a diffusers pipeline folder (what `export.py format=diffusers`
    writes of a U-Net or DiT, a latent one's with its vae/, or a DDPM UNet2DModel such as google/ddpm-cifar10-32
    with its scheduler).

    Read weights-only through difflab.checkpoint: only allowlisted targets are built (add your own model class
    with allowed_targets=[…] if you trust it). device "auto": CUDA when available, as sample.py. A latent diffusion
    checkpoint's autoencoder is read from the path it recorded, or from `autoencoder` (a moved copy, same hash)."""
    if not isinstance(path, str | os.PathLike):  # pathlib's own TypeError names no argument
        raise TypeError(
            f"difflab.load takes a path (str or Path) to a checkpoint or model folder, got {path!r}"
        )
    if not str(path).strip():  # before, read as the current folder (a run there would be loaded)
        raise ValueError("difflab.load got an empty path: give a checkpoint, a run folder or a model folder")
    if str(path).startswith("~"):  # as a shell would (a Hub id never starts so)
        path = Path(path).expanduser()
    loaded = load_model(path, pick_device(str(device)), allowed_targets, autoencoder=autoencoder)
    return DiffusionPipeline.from_loaded(loaded, path)


def plain_number(value: Any) -> Any:
    """A NumPy scalar's Python value (np.int64(3) -> 3); anything else as it is."""
    return value.item() if isinstance(value, np.generic) else value
