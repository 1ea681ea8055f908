"""What a diffusers folder or file is, where difflab was given it instead of what it reads, in a phrase for the
one-line error that names it: a model folder alone (UNet2DModel(...).save_pretrained(folder)), one part of a
pipeline, a pipeline of a network difflab does not load, a pipeline's index or weights file. Only config files
are read (leniently: a damaged one is named by the reader that needs it)."""

from __future__ import annotations

import json
from pathlib import Path

PIPELINE_INDEX = "model_index.json"
WEIGHTS_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
# The networks difflab reads from a diffusers pipeline folder, and the subfolder each is kept in there.
READ_NETWORKS = {"UNet2DModel": "unet", "DiTTransformer2DModel": "transformer"}
READ_LAYOUT = "a UNet2DModel in unet/ or a DiTTransformer2DModel in transformer/, beside a scheduler/"
PARTS = ("unet", "transformer", "vae")  # the subfolders of the pipelines difflab reads


def config_class(path: Path) -> str | None:
    """The _class_name of the diffusers config at `path`; None where there is none or it cannot be read."""
    try:
        name = json.loads(path.read_text()).get("_class_name") if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None
    return name if isinstance(name, str) and name else None


def is_pipeline_of(folder: Path, part: Path) -> bool:
    """Whether `folder` is a diffusers pipeline folder holding `part` as one of its components: its
    model_index.json lists it, or (export.py's edm and flow folders have no index) a scheduler/ is beside it."""
    index = folder / PIPELINE_INDEX
    try:
        listed = json.loads(index.read_text()) if index.is_file() else None
    except (OSError, ValueError):
        listed = {}  # damaged: still a pipeline's index, named by the reader of the pipeline folder
    if isinstance(listed, dict):
        return part.name in listed or part.name in PARTS
    return (folder / "scheduler").is_dir() and part.name in PARTS


def what_model_folder_is(folder: Path) -> str | None:
    """What a diffusers model folder (config.json naming its class) given as a difflab model is, and what to give
    instead; None for any other folder."""
    name = config_class(folder / "config.json")
    if name is None:
        return None
    # A latent pipeline's part too: its folder is read with the vae/ beside it.
    if is_pipeline_of(folder.parent, folder):
        # Stable Diffusion's unet/: its pipeline's folder would be refused too.
        foreign = _foreign_part(folder.parent)
        if foreign:
            return f"it is one part ({name}) of a diffusers pipeline {folder.parent} whose {foreign}"
        return f"it is one part ({name}) of a diffusers pipeline: give the pipeline's folder, {folder.parent}"
    if name in READ_NETWORKS:
        return f"it is a diffusers {name} folder alone, with no scheduler: {_lone_advice(name, folder)}"
    return (
        f"it is a diffusers {name} folder alone, not a pipeline difflab reads ({READ_LAYOUT}): give such a pipeline "
        "folder, or a difflab checkpoint"
    )


def foreign_network(folder: Path) -> str | None:
    """Where `folder` is a diffusers pipeline whose network difflab does not load (Stable Diffusion's
    UNet2DConditionModel in unet/, say): what it is, and what difflab reads instead; None otherwise."""
    held = _foreign_part(folder)
    return f"it is a diffusers pipeline whose {held}" if held else None


def _foreign_part(folder: Path) -> str | None:
    """ "<part>/ holds a <class>, which difflab does not load: …" of a pipeline folder; None where its network is
    one difflab reads, or it holds none."""
    for part in ("unet", "transformer"):
        name = config_class(folder / part / "config.json")
        if name is not None and READ_NETWORKS.get(name) != part:
            return (
                f"{part}/ holds a {name}, which difflab does not load: difflab reads diffusers pipelines of its own "
                f"networks ({READ_LAYOUT})"
            )
    return None


def what_file_is(path: Path) -> str | None:
    """Where `path` is a file of a diffusers folder given where the folder is meant (a pipeline's
    model_index.json, a model's weights or config.json): the line saying which folder to pass instead (or that
    difflab reads none of them); None for any other file."""
    name = config_class(path.parent / "config.json")
    if path.name == PIPELINE_INDEX:
        pipeline, owner = path.parent, f"the index of the diffusers pipeline {path.parent}"
    elif name is not None and path.name in (*WEIGHTS_FILES, "config.json"):
        model = path.parent
        pipeline = model.parent if is_pipeline_of(model.parent, model) else None
        owner = f"one file of the diffusers {name} folder {model}" + (
            f", part of the pipeline {pipeline}" if pipeline else ""
        )
    else:
        return None
    if pipeline is not None:
        foreign = _foreign_part(pipeline)
        return (
            f"{path} is {owner}, whose {foreign}"
            if foreign
            else f"{path} is {owner}: pass the pipeline's folder"
        )
    if name in READ_NETWORKS:
        return f"{path} is {owner}, alone with no scheduler: {_lone_advice(name, path.parent)}"
    return f"{path} is {owner}, not a pipeline difflab reads ({READ_LAYOUT})"


def _lone_advice(name: str, folder: Path) -> str:
    """What to do with a diffusers model folder of a network difflab reads that has no pipeline around it: sampled,
    it needs a scheduler beside it; train.py's init_from= takes it as it is."""
    return (
        f"put it as {READ_NETWORKS[name]}/ beside a scheduler/ (a diffusers pipeline folder), or give a difflab "
        f"checkpoint; train.py init_from={folder} starts a run from its weights as it is"
    )
