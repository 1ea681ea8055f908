"""sample.py's four modes as generation requests: sample, inpaint, img2img (n results per picture) and
superres (n outputs per low-resolution picture). sample.py and difflab.load(...).sample() build theirs here."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..diffusion import Sampler
from ..io.read_inputs import load_images, load_masks
from ..sample_options import SUPERRES, SampleOptions
from .autoguide import check_guide
from .conditions import Conditions, for_each_result
from .methods import Img2Img, Inpaint, Method, Sampling
from .model import TrainedModel, generated_shape, low_res_shape, model_kind, recipe_threads
from .request import GenerationRequest
from .requested import requested_conditions
from .superres import consistent_with, superres_request


def request_for(
    model: TrainedModel, options: SampleOptions, sampler: Sampler, source: Any, guide: Any = None
) -> GenerationRequest:
    """The request `options` make of `model` (read from `source`, named in errors), sampled with `sampler` where
    the mode samples (not RePaint): conditions are checked first, then the pictures are read. `guide`: a loaded
    weaker model (with .net) for autoguidance at scale options.guidance, read from options.guide."""
    options.check()
    if guide is not None:
        check_guide(model, guide, source, options.guide)
    if options.mode == SUPERRES:
        return superres_for(model, options, sampler, source, guide)
    n = int(options.n)
    per_picture = requested_conditions(
        model,
        n,
        source,
        options.labels,
        options.prompt,
        options.negative_prompt,
        options.guidance,
        guided_by_model=guide is not None,
    )
    if options.mode == "sample":
        return sampling_request(model, options, sampler, per_picture, guide)
    pictures = load_images(options.image, model.sample_shape)
    # Latent diffusion edits the pictures' latents, then decodes them.
    latents = getattr(model, "latents", None)
    edited = pictures.images if latents is None else latents.encode(pictures.images)
    method: Method
    if options.mode == "inpaint":
        masks = load_masks(options.mask, pictures)
        masks = masks if latents is None else latents.latent_mask(masks)
        repaint = repaint_options(options.inpaint, model.schedule.timesteps)
        method = Inpaint(model.schedule, model.prediction_type, edited, masks, n, repaint)
    else:
        method = Img2Img(sampler, edited, n, float(options.strength))
    return GenerationRequest(
        method,
        range(len(pictures.images) * n),
        conditions=for_each_result(per_picture, n),
        pictures=pictures,
        per_picture=n,
        **shared_fields(model, options, guide),
    )


def sampling_request(
    model: TrainedModel,
    options: SampleOptions,
    sampler: Sampler,
    conditions: Conditions,
    guide: Any = None,
) -> GenerationRequest:
    """Samples 0..n-1 from noise with `sampler` and the given conditions (sample.py's sample mode, evaluate.py;
    evaluate.py's super-resolution scores take superres.consistency: sample i from low-res input i, cycled)."""
    shape = generated_shape(model)
    consistent = options.consistency is True and conditions.low_res is not None
    return GenerationRequest(
        Sampling(sampler, shape),
        range(int(options.n)),
        conditions=conditions,
        wrap=consistent_with(conditions.low_res, shape[-1], 1, sampler) if consistent else None,
        **shared_fields(model, options, guide),
    )


def superres_for(
    model: TrainedModel, options: SampleOptions, sampler: Sampler, source: Any, guide: Any = None
) -> GenerationRequest:
    """n super-resolutions of each picture in options.image, read at the model's low resolution."""
    if model.condition != SUPERRES:
        raise ValueError(
            f"mode=superres needs a super-resolution checkpoint (trained with data.condition=superres); "
            f"{source} holds {model_kind(model)}"
        )
    pictures = load_images(options.image, low_res_shape(model))
    size, n = model.sample_shape[-1], int(options.n)
    fields = shared_fields(model, options, guide)
    return superres_request(
        sampler, pictures.images, size, n, options.consistency, pictures=pictures, **fields
    )


def shared_fields(model: TrainedModel, options: SampleOptions, guide: Any = None) -> dict[str, Any]:
    """The request fields every mode takes from the options (and the autoguidance model) alike."""
    if guide is not None and options.negative_prompt is not None:
        raise ValueError(
            "negative_prompt= guides against the unconditional branch and guide= against a guide model: give one"
        )
    latents = getattr(model, "latents", None)
    return {
        "decode": None if latents is None else latents.decode,
        # The network generation runs: an EDM or flow guide through its ε-face, as the main model.
        "guide": None if guide is None else getattr(guide, "sampling_net", guide.net),
        "seed": int(options.seed),
        "batch_size": options.batch_size,
        "guidance": float(options.guidance),
        "precision": options.precision,
        "cpu_threads": options.cpu_threads,
        "recipe_threads": recipe_threads(model),
    }


def repaint_options(given: Mapping[str, Any] | None, timesteps: int) -> dict[str, int]:
    """inpaint.* as RePaint takes them; its steps held to the schedule's timesteps under their own key (the DDPM
    sampler inside would name "sampler steps", a value the user did not set)."""
    repaint = {key: int(value) for key, value in (given or {}).items()}
    if repaint.get("steps", 0) > timesteps:
        raise ValueError(
            f"inpaint.steps={repaint['steps']} must be at most the schedule's {timesteps} timesteps"
        )
    steps, jump, samples = (repaint.get(key) for key in ("steps", "jump_length", "jump_n_sample"))
    if None not in (steps, jump, samples) and samples > 1 and jump >= steps:
        raise ValueError(
            f"inpaint.jump_length={jump} is not below inpaint.steps={steps}: RePaint would never jump back, so "
            f"inpaint.jump_n_sample={samples} would resample nothing; give a shorter jump_length (or "
            "inpaint.jump_n_sample=1: no resampling)"
        )
    return repaint
