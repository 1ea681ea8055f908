"""What sample.py and evaluate.py are asked, read from their config in one place and checked once: the rules of
the values both take, and SamplingSettings, the typed object their entry functions use instead of cfg."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..checkpoint_config import Overrides
from ..sample_options import NUMBER_RULES, SampleOptions
from ..value_rules import INPAINT_RULES, PRECISIONS, SAMPLER_RULES, Rule, flag, one_of, whole
from .argument_types import check_argument_types
from .rules import check_values, require
from .typed import typed_keys_under, typed_under

# Values sample.py (every mode) and evaluate.py take, checked before anything is loaded or written.
SAMPLING_RULES: dict[str, Rule] = {
    "n": whole(1),
    **NUMBER_RULES,  # seed, batch_size, cpu_threads, guidance: held by difflab.load(...).sample() too
    "precision": one_of(*PRECISIONS),
    **{f"sampler.{key}": rule for key, rule in SAMPLER_RULES.items()},
    **INPAINT_RULES,
    "resume": flag,
}


@dataclass(frozen=True)
class SamplingSettings:
    """The checkpoint, where to run, which sampler and what to generate (options), and where results go."""

    ckpt: str | None
    device: str
    allowed_targets: tuple[str, ...]
    sampler: dict[
        str, Any
    ]  # the sampler's config (a partial), bound to the checkpoint's schedule once loaded
    out: str | None
    root_dir: str
    options: SampleOptions
    fixed_by_checkpoint: Overrides | None = None  # overrides compared with the checkpoint
    autoencoder: str | None = None  # a latent checkpoint's autoencoder moved elsewhere (same hash)
    resume: bool = False  # finish the set a stopped run left in out=


def sample_options(cfg: DictConfig, mode: str) -> SampleOptions:
    """What sample.py's (or evaluate.py's) config asks to generate in `mode`, as plain values for
    difflab.generation; a key the config does not have (evaluate.py has no image, mask, …) is not asked for, nor
    img2img's strength (or inpaint's settings) outside its mode unless the command line typed it (their defaults are
    always in the config)."""
    return SampleOptions(
        mode=mode,
        n=cfg.n,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        precision=cfg.precision,
        cpu_threads=cfg.cpu_threads,
        guidance=cfg.guidance,
        labels=_plain(cfg.get("labels")),
        prompt=_plain(cfg.get("prompt")),
        negative_prompt=_plain(cfg.get("negative_prompt")),
        image=_plain(cfg.get("image")),
        mask=_plain(cfg.get("mask")),
        strength=cfg.get("strength") if mode == "img2img" or typed_under(cfg, "strength") else None,
        inpaint=inpaint_asked(cfg, mode),
        consistency=OmegaConf.select(cfg, "superres.consistency", default=False),
        guide=_plain(cfg.get("guide")),
    )


def _plain(value: Any) -> Any:
    """A list or mapping of the config as Python's own: written to settings.json as it is (before, a one-item
    negative_prompt=[…] failed there once every image was made, and the images were removed)."""
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def inpaint_asked(cfg: DictConfig, mode: str) -> dict[str, Any] | None:
    """RePaint's settings: all of them in mode=inpaint, elsewhere only those the command line typed."""
    inpaint = cfg.get("inpaint")
    if inpaint is None:
        return None
    values = OmegaConf.to_container(inpaint, resolve=True)
    if mode == "inpaint":
        return values
    typed = typed_keys_under(cfg, "inpaint")
    return {k: v for k, v in values.items() if "inpaint" in typed or f"inpaint.{k}" in typed} or None


def read_sampling_settings(
    cfg: DictConfig,
    rules: dict[str, Rule],
    mode: str,
    missing_ckpt: str | None = None,
    fixed_by_checkpoint: Overrides | None = None,
) -> SamplingSettings:
    """cfg as SamplingSettings, after the mode's needs, a required ckpt (when `missing_ckpt` says what to
    write) and every value's rule have been checked: a problem is one line before anything is loaded."""
    options = sample_options(cfg, mode)
    options.check()
    ckpt = cfg.ckpt if missing_ckpt is None else require(cfg, "ckpt", missing_ckpt)
    check_values(cfg, rules)
    check_argument_types(cfg, ["sampler"])  # a key the sampler does not take (+sampler.eta=1 on dpm_solver)
    if cfg.get("resume") and not cfg.out:
        raise ValueError("resume=true needs out=<the folder a stopped sample.py left>")
    return SamplingSettings(
        ckpt=ckpt,
        device=str(cfg.device),
        allowed_targets=tuple(cfg.allowed_targets),
        sampler=OmegaConf.to_container(cfg.sampler, resolve=True),
        out=cfg.out,
        root_dir=str(cfg.paths.root_dir),
        options=options,
        fixed_by_checkpoint=fixed_by_checkpoint,
        autoencoder=cfg.get("autoencoder"),
        resume=bool(cfg.get("resume")),
    )
