"""What a checkpoint's stored config may build and how it compares with a command: the allowlist of `_target_`s
(a checkpoint is data, never code), building one of its groups once its targets are checked, and the overrides
given that contradict it. difflab.checkpoint reads a checkpoint through these."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from .declared_types import wrong_kind
from .listing import listed

BUILT_GROUPS = (
    "model",
    "schedule",
    "data",
    "sampler",
    "formulation",
)  # the stored groups a reader may instantiate
# A run's data: images, or (latent diffusion) an autoencoder's latents of them.
IMAGE_DATA, LATENT_DATA = "difflab.data.ImageDataModule", "difflab.data.LatentDataModule"

# What a stored config may build: difflab's own denoisers, schedules, samplers and datasets, by the exact
# dotted names its configs use. An exact string match, never a prefix: `difflab.models.unet.torch.load` resolves
# too, to something else entirely.
ALLOWED_TARGETS = frozenset(
    {
        "difflab.models.UNet",
        "difflab.models.DiT",
        "difflab.models.AutoencoderKL",
        "difflab.diffusion.NoiseSchedule",
        "difflab.diffusion.NoiseSchedule.from_name",
        "difflab.diffusion.DDPMSampler",
        "difflab.diffusion.DDIMSampler",
        "difflab.diffusion.DPMSolverSampler",
        "difflab.diffusion.EulerSampler",
        "difflab.diffusion.HeunSampler",
        IMAGE_DATA,
        LATENT_DATA,
        "difflab.diffusion.formulations.VPTraining",
        "difflab.diffusion.formulations.EDM",
        "difflab.diffusion.formulations.Flow",
    }
)
_SHOWN = 6  # differences named in a one-line error; the rest are counted


def targets(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(key, target) for every `_target_` in a nested config of dicts and lists."""
    if isinstance(node, Mapping):
        if node.get("_target_") is not None:
            yield where, str(node["_target_"])
        for key, child in node.items():
            yield from targets(child, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list | tuple):
        for i, child in enumerate(node):
            yield from targets(child, f"{where}[{i}]")


def check_targets(node: Any, where: str, allowed: Iterable[str] = ()) -> None:
    """Refuse, in one line naming the key, any `_target_` under `node` that is not allowlisted."""
    permitted = ALLOWED_TARGETS | set(allowed)
    for key, target in targets(node, where):
        if target not in permitted:
            raise ValueError(
                f"{key}._target_={target} is not a difflab model, schedule, sampler or dataset; refusing to "
                f"build it from a checkpoint (if you trust it, add allowed_targets=[{target}])"
            )


def check_stored_targets(config: Mapping[str, Any], allowed: Iterable[str], source: str) -> None:
    """Refuse, in one line starting with `source` (checkpoint <path>, model folder <path>), a stored config whose
    built groups (BUILT_GROUPS) name a `_target_` outside the allowlist."""
    for group in BUILT_GROUPS:
        try:
            check_targets(config.get(group), group, allowed)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from error


def build(config: Mapping[str, Any], key: str, allowed: Iterable[str] = (), where: str = "") -> Any:
    """Instantiate config[key] (a stored config's group, e.g. 'model') once its targets are checked; a value the
    class refuses is one line naming `where` the config came from (before, Hydra's two-line "Error in call to
    target …" around it: a hand-edited scheduler's betas of 1.5)."""
    if not isinstance(config.get(key), Mapping):
        raise ValueError(f"the stored config has no {key} group")
    check_targets(config[key], key, allowed)
    check_stored_types(config[key], key, where)
    try:
        return instantiate(OmegaConf.create(dict(config[key])))
    except InstantiationException as error:
        if isinstance(error.__cause__, ValueError):
            raise ValueError(
                f"{where or 'the stored config'}: its {key} cannot be built: {error.__cause__}"
            ) from error
        raise


def check_stored_types(group: Mapping[str, Any], key: str, where: str) -> None:
    """A stored value not of the kind its constructor declares, named with its key (before, what Python tripped
    over inside the constructor: "'<' not supported between instances of 'int' and 'str'" for a hand-edited
    model.base_channels='16')."""
    wrong = wrong_kind(key, str(group.get("_target_")), group)
    if wrong:
        raise ValueError(f"{where or 'the stored config'}: its {key} cannot be built: {wrong}")


def check_stored_config_types(config: Mapping[str, Any], where: str) -> None:
    """check_stored_types for each built group of difflab's own (an allowlisted `_target_`), before a resume holds
    the stored values against the configured ones: a hand-edited model.base_channels='16' was "model.base_channels=16
    (checkpoint: 16)", a contradiction between two values that read alike."""
    for group in BUILT_GROUPS:
        values = config.get(group)
        if isinstance(values, Mapping) and values.get("_target_") in ALLOWED_TARGETS:
            check_stored_types(values, group, where)


def image_data_config(config: Mapping[str, Any]) -> Mapping[str, Any]:
    """A latent run's stored config with its data as the images the latents were encoded from (what its decoded
    samples are scored against); any other config as it is."""
    data = dict(config.get("data") or {})
    if data.get("_target_") != LATENT_DATA:
        return config
    for key in ("autoencoder", "scale_factor", "latent_cache_dir"):
        data.pop(key, None)
    return {**config, "data": {**data, "_target_": IMAGE_DATA}}


def stored_value(config: Mapping[str, Any], dotted: str) -> Any:
    """config['a']['b'] for 'a.b'; None when any part is absent."""
    value: Any = config
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def leaves(value: Any, prefix: str) -> dict[str, Any]:
    """{'a.b.c': leaf} for every leaf of a nested dict under `prefix`."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, child in value.items():
            out.update(leaves(child, f"{prefix}.{key}"))
        return out
    return {prefix: value}


def contradictions(
    wanted: Mapping[str, Any], stored: Mapping[str, Any], stored_as: Mapping[str, str] | None = None
) -> list[str]:
    """`key=new (checkpoint: old)` for each wanted leaf the stored config holds with another value; `stored_as`
    maps a key as the user typed it to where the stored config keeps it (image_size -> data.image_size).

    Keys only one side has are skipped: a config key added after the checkpoint was written is not a change.
    """
    found = []
    for key, value in wanted.items():
        for leaf, new in leaves(value, key).items():
            old = stored_value(stored, (stored_as or {}).get(leaf, leaf))
            if old is not None and old != new:
                found.append(f"{leaf}={new} (checkpoint: {old})")
    return found


@dataclass(frozen=True)
class Overrides:
    """Values a command gives that the checkpoint fixes, compared with its stored config before anything is built:
    `values` as typed, `hint` what to do about a contradiction, `stored_as` where the stored config keeps a key
    typed otherwise (image_size -> data.image_size), `options` the groups given by option (model=unet_small_cpu)
    and `typed` the keys given one by one (model.base_channels=64)."""

    values: Mapping[str, Any]
    hint: str
    stored_as: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, str] = field(default_factory=dict)
    typed: frozenset[str] = frozenset()

    def compared(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """The values to hold against `stored`. A group given as the option the run itself chose is its own: only
        its keys typed one by one are compared, since the run's experiment or overrides may have changed the
        option's values (digits_cond_cpu sets model.num_classes=10 on unet_small_cpu)."""
        own = {g for g, option in self.options.items() if stored_value(stored, f"choices.{g}") == option}
        return {
            key: value
            for key, value in self.values.items()
            if key.split(".", 1)[0] not in own or key in self.typed
        }


def check_contradictions(
    wanted: Mapping[str, Any],
    stored: Mapping[str, Any],
    path: Path | str,
    hint: str,
    stored_as: Mapping[str, str] | None = None,
    found_before: list[str] | None = None,
) -> None:
    """A one-line ValueError naming every wanted setting that contradicts the checkpoint's config, after those
    `found_before` (groups compared by what they build)."""
    found = [*(found_before or []), *contradictions(wanted, stored, stored_as)]
    if found:
        raise ValueError(f"the config contradicts checkpoint {path}: {listed(found, _SHOWN)}; {hint}")
