"""sample.py's settings.json: how the results were made, per mode (the checkpoint's weights and step, the sampler
or editing method, seed, precision, conditions, and for edits and super-resolution the inputs and the results'
order)."""

from __future__ import annotations

from typing import Any, Protocol

from ..sample_options import SUPERRES, SampleOptions
from .class_names import label_names
from .images import Generation
from .methods import Inpaint
from .model import TrainedModel, low_res_shape, sr_factor
from .request import GenerationRequest


class WeightedModel(TrainedModel, Protocol):
    """A trained model that knows which weights it holds (EMA or raw) and the step they were saved at."""

    weights: str
    global_step: int


def sample_settings(
    ckpt: str,
    sampler_config: dict[str, Any],
    options: SampleOptions,
    loaded: WeightedModel,
    generation: Generation,
    cpu_threads: Any,
) -> dict[str, Any]:
    """settings.json of mode=sample: how the samples were made."""
    conditions = generation.request.conditions
    return {
        "ckpt": str(ckpt),
        "n": int(options.n),
        "seed": int(options.seed),
        "sampler": sampler_config,
        "nfe": generation.request.method.nfe,
        "precision": options.precision,
        "batch_size": generation.batch_size,
        "cpu_threads": cpu_threads,
        "guidance": float(options.guidance) if loaded.condition or options.guide else None,
        "guide": None if options.guide is None else str(options.guide),
        "labels": None if conditions.labels is None else list(conditions.labels),
        **named_labels(loaded, conditions.labels),
        "prompts": conditions.prompts,
        "negative_prompt": options.negative_prompt,
        **weights_settings(loaded),
    }


def edit_settings(
    ckpt: str,
    sampler_config: dict[str, Any],
    options: SampleOptions,
    loaded: WeightedModel,
    generation: Generation,
    cpu_threads: Any,
) -> dict[str, Any]:
    """settings.json of mode=inpaint|img2img: the inputs, the order of the results and the editing method."""
    request = generation.request
    conditions, method = request.conditions, request.method
    guided = conditions.cond_for is not None
    if isinstance(method, Inpaint):
        edit = method.settings()
    else:
        edit = {"strength": method.strength, "sampler": sampler_config}
        edit.update(method.settings())
    order = "result k is an edit of input k // n"
    if guided:
        order += " towards the condition of sample k % n (the conditions spread over n in equal blocks)"
    return {
        **pictures_settings(ckpt, options, request),
        "mask": str(options.mask) if isinstance(method, Inpaint) else None,
        "n": int(options.n),
        "order": order,
        **({"guidance": float(options.guidance)} if guided or options.guide else {}),
        **({"guide": str(options.guide)} if options.guide else {}),
        **({"labels": list(conditions.labels)} if guided and conditions.labels else {}),
        **(named_labels(loaded, conditions.labels) if guided else {}),
        **({"prompts": conditions.prompts} if guided and conditions.prompts else {}),
        **({"negative_prompt": options.negative_prompt} if conditions.negative_for is not None else {}),
        "seed": int(options.seed),
        "precision": options.precision,
        **edit,
        **weights_settings(loaded),
    }


def superres_settings(
    ckpt: str,
    sampler_config: dict[str, Any],
    options: SampleOptions,
    loaded: WeightedModel,
    generation: Generation,
    cpu_threads: Any,
) -> dict[str, Any]:
    """settings.json of mode=superres: the inputs, their size and the outputs'."""
    request = generation.request
    return {
        **pictures_settings(ckpt, options, request),
        "input_size": list(low_res_shape(loaded)[1:]),
        "output_size": list(request.sample_shape[1:]),
        "sr_factor": sr_factor(loaded),
        "n": int(options.n),
        "order": "result k is a super-resolution of input k // n",
        "grid": "per row: input (nearest-upsampled) | bicubic | n results",
        "seed": int(options.seed),
        "sampler": sampler_config,
        "nfe": request.method.nfe,
        "consistency": options.consistency,
        "precision": options.precision,
        # As mode=sample records them (before, left out): what a timing of this folder ran with.
        "batch_size": generation.batch_size,
        "cpu_threads": cpu_threads,
        **weights_settings(loaded),
    }


def named_labels(loaded: WeightedModel, labels: Any) -> dict[str, Any]:
    """{"label_names": the class name of each label} where the model's classes have names, else nothing."""
    names = label_names(loaded.config, labels)
    return {} if names is None else {"label_names": names}


def pictures_settings(ckpt: str, options: SampleOptions, request: GenerationRequest) -> dict[str, Any]:
    """What an edit or a super-resolution was made from."""
    assert request.pictures is not None
    inputs = [str(p) for p in request.pictures.paths]
    return {"mode": options.mode, "ckpt": str(ckpt), "image": str(options.image), "inputs": inputs}


def weights_settings(loaded: WeightedModel) -> dict[str, Any]:
    """Which weights made the results: EMA or raw, at which training step."""
    return {"weights": loaded.weights, "global_step": loaded.global_step}


SETTINGS_JSON = {"sample": sample_settings, SUPERRES: superres_settings}  # other modes: edit_settings
