"""init_from= a difflab model: a fresh run starts from the weights of a train.py checkpoint, a run folder (its
last.ckpt) or an export.py format=safetensors folder, whose network is the configured one (a U-Net or a DiT).
A diffusers folder or Hub id is mapped by model_folder.diffusers_folder instead. The EMA weights are taken where
the source has them, as sample.py samples with them: fine-tuning starts from what the model is known by."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..autoencoder_checkpoint import is_autoencoder_config
from ..checkpoint_config import contradictions
from ..checkpoint_file import read_model
from ..data.folder import class_folder_changes
from ..listing import listed
from ..model_folder.diffusers_folder import class_name
from ..model_folder.hub import is_hub_id
from ..model_folder.read_diffusers_pipeline import is_diffusers_pipeline, read_scheduler
from ..model_folder.state_fit import state_mismatch

log = logging.getLogger("difflab")

VP_TRAINING = "difflab.diffusion.formulations.VPTraining"
# What the weights were trained to predict: a run that changes them starts far from what the weights learnt.
TRAINED_FOR = ("prediction_type", "formulation", "schedule")


def is_difflab_source(source: str) -> bool:
    """Whether init_from=`source` names a difflab model: anything on disk but a diffusers U-Net pipeline folder
    or a bare UNet2DModel folder (its config.json names the class), which are mapped onto the configured U-Net. A
    DiT pipeline folder (transformer/, as export.py writes one) is read as sample.py reads it (before: "only
    difflab.models.UNet maps to diffusers' UNet2DModel")."""
    path = Path(source).expanduser()
    if is_hub_id(source) or not path.exists():
        return False
    if is_diffusers_pipeline(path):
        return class_name(path / "transformer" / "config.json") is not None
    # A bare UNet2DModel folder is mapped; any other (a DiT's transformer/ alone) is read, whose reader names it.
    return class_name(path / "config.json") != "UNet2DModel"


def read_init_weights(
    source: str,
    build_net: Callable[[], torch.nn.Module],
    trained_for_now: Mapping[str, Any],
    allowed_targets: set[str],
    network_now: Mapping[str, Any] | None = None,
    class_folders_now: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """The network weights of the difflab model at `source`, once they fit the net `build_net` makes (built on the
    meta device); a one-line error naming what does not fit, and the source's settings that differ from
    `network_now` (model, data.condition, autoencoder as configured). `trained_for_now`: the TRAINED_FOR values
    configured now, a warning naming those the source was trained with otherwise."""
    model = read_model(source, allowed_targets)
    refuse_another_task(source, model.config, network_now or {})
    with torch.device("meta"):
        expected = build_net().state_dict()
    problem = state_mismatch(expected, model.state)
    if problem:
        raise ValueError(
            f"init_from={source} does not fit the configured model: {problem}; configure the network of "
            f"{model.where} ({_its_network(model.config, network_now or {})})"
        )
    trained_for = dict(trained_for_now)
    if model.kind == "diffusers folder":
        # Its schedule is diffusers' betas, not a schedule= option: not told apart, as for a U-Net pipeline.
        trained_for.pop("schedule", None)
    warn_if_trained_otherwise(source, trained_for, model.config)
    warn_if_other_space(source, model.config.get("autoencoder"), (network_now or {}).get("autoencoder"))
    warn_if_other_class_folders(
        source, (model.config.get("data") or {}).get("class_folders"), class_folders_now
    )
    return model.state


def refuse_another_task(source: str, config: Mapping[str, Any], now: Mapping[str, Any]) -> None:
    """An autoencoder's weights for a diffusion run, or a diffusion model's for an autoencoder run: one line on
    what to give instead. Before, the weights' mismatch, with advice to configure the other task's network (which
    turned a diffusion run into an autoencoder run)."""
    theirs, ours = is_autoencoder_config(config), is_autoencoder_config(now)
    if theirs and not ours:
        raise ValueError(
            f"init_from={source} is an autoencoder (task=autoencoder), not a diffusion model: to train a latent "
            f"diffusion model on its latents give autoencoder={source} (and drop init_from)"
        )
    if ours and not theirs:
        its = f"; its autoencoder is {config['autoencoder']}" if config.get("autoencoder") else ""
        raise ValueError(
            f"init_from={source} is a diffusion model: an autoencoder run (task=autoencoder) starts only from an "
            f"autoencoder's weights{its}"
        )


def warn_if_other_space(source: str, theirs: Any, ours: Any) -> None:
    """A denoiser of latents fine-tuned on pixels, or the other way round, fits when the shapes agree but starts
    from weights that learnt another kind of input: allowed, never silent."""
    if bool(theirs) == bool(ours):
        return
    learnt = f"the latents of autoencoder {theirs}" if theirs else "pixels"
    now = f"the latents of autoencoder {ours}" if ours else "pixels"
    log.warning(
        "init_from=%s denoised %s and this run trains on %s: its weights start far from what they learnt",
        source,
        learnt,
        now,
    )


def warn_if_other_class_folders(source: str, recorded: Any, now: list[str] | None) -> None:
    """Fine-tuning a labelled model on class folders other than its own is allowed (new classes relearn their
    embeddings) but never silent: each label then means another class than the weights learnt. Before, a folder
    renamed since (the same count) went without a word."""
    changes = None if not recorded or now is None else class_folder_changes(list(recorded), list(now))
    if changes is not None:
        log.warning(
            "init_from=%s was trained on other class folders (%s): from here on each label means the class of the "
            "data now, not the one its weights learnt",
            source,
            changes,
        )


def warn_if_trained_otherwise(
    source: str, trained_for_now: Mapping[str, Any], stored: Mapping[str, Any]
) -> None:
    """Name the TRAINED_FOR settings of `stored` (the source's config) that differ from this run's."""
    changed = contradictions(trained_for_now, stored)
    if changed:
        log.warning(
            "init_from=%s was trained with other settings than this run's: %s; its weights predict what those ask "
            "for, so training starts far from what they learnt",
            source,
            listed(changed, 4),
        )


def warn_if_pipeline_trained_otherwise(folder: str, trained_for_now: Mapping[str, Any]) -> None:
    """For a diffusers U-Net pipeline folder, what warn_if_trained_otherwise says of a difflab model: its
    scheduler tells its prediction type (and formulation, for difflab's edm and flow exports). A bare U-Net folder,
    or a scheduler difflab cannot read, says nothing of them; the weights are taken as they are."""
    path = Path(folder)
    if not is_diffusers_pipeline(path):
        return
    try:
        # Its sampling settings (clipping, thresholding) are no concern of training.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored = read_scheduler(path, f"init_from={folder}")
    except ValueError:
        return
    # Its schedule is diffusers' betas, not a schedule= option: not told apart.
    wanted = {key: value for key, value in trained_for_now.items() if key != "schedule"}
    # A table of betas is a VP model's: an edm or flow run starting from it is told so.
    stored.setdefault("formulation", {"_target_": VP_TRAINING})
    warn_if_trained_otherwise(folder, wanted, stored)


# The model keys the model options take from the data (conf/model/*.yaml), in a pixel diffusion run.
PIXEL_KEYS_OF_DATA = {"in_channels": "data.channels", "image_size": "data.image_size"}


def _its_network(config: Mapping[str, Any], now: Mapping[str, Any]) -> str:
    """The source's network as a command line gives it: its model= option where recorded (else its class), the
    model settings, conditioning and autoencoder it has otherwise than `now` (before: model=unet_tiny alone, for
    a source trained with model.base_channels=32 or data.condition=labels)."""
    model, model_now = config.get("model") or {}, now.get("model") or {}
    same_class = model.get("_target_") == model_now.get("_target_")
    choice = (config.get("choices") or {}).get("model")
    named = [f"model={choice}"] if choice else [f"a {str(model.get('_target_', '?')).rsplit('.', 1)[-1]}:"]
    # A pixel network's input follows its data (model.in_channels: ${data.channels}): the data keys are what to
    # give; before, model.in_channels=1 passed this check and the run failed at step 1 on 3-channel images.
    follows_data = PIXEL_KEYS_OF_DATA if not config.get("autoencoder") and not now.get("autoencoder") else {}
    shown = dict(model)  # what to type for each key that differs
    if config.get("autoencoder"):
        # A latent network's input follows its autoencoder and data: before, model.image_size=4, which use_latents
        # overwrote with the latents of this run's data.image_size (a 2x2-latent net from 4x4-latent weights).
        follows_data = {"in_channels": "autoencoder"}
        shown["in_channels"] = config["autoencoder"]
        size = (config.get("data") or {}).get("image_size")
        if size is not None:
            follows_data["image_size"], shown["image_size"] = "data.image_size", size
    named += [
        f"{follows_data.get(key, f'model.{key}')}={'null' if shown[key] is None else shown[key]}"
        for key, value in model.items()
        # Of the configured network's class, only keys it has: another cannot be typed (model.cond_channels of a
        # diffusers export's DiT); of another class, all that tell the source apart.
        if key != "_target_"
        and not isinstance(value, dict)
        and model_now.get(key) != value
        and (key in model_now or not same_class)
    ]
    condition = (config.get("data") or {}).get("condition")
    if condition != now.get("condition"):
        named.append(f"data.condition={condition if condition is not None else 'null'}")
    if bool(config.get("autoencoder")) != bool(now.get("autoencoder")) and not any(
        n.startswith("autoencoder=") for n in named
    ):
        named.append(f"autoencoder={config.get('autoencoder') or 'null'}")
    return " ".join(named)
