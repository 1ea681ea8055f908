"""The conditions a user asks for (labels=, prompt=, negative_prompt=, guidance=), checked against what the
model was trained to take: sample.py, evaluate.py and difflab.load(...).sample() read them alike."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Set
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..diffusion.conditioning import SpreadLabels, spread_labels
from ..text import TextTable, embed_texts, encoder_version
from .class_names import class_of, model_class_names
from .conditions import Conditions, class_conditions, text_conditions
from .model import TrainedModel, model_kind

log = logging.getLogger("difflab")

SUPERRES = "superres"
EXAMPLE = 'prompt="a handwritten seven" (or a list: prompt=["a seven","digit 3"])'


def as_list(value: Any) -> list[Any]:
    """One value or several (a list, a tuple, an OmegaConf ListConfig, a numpy array or torch tensor) as a list of
    plain Python values; a string is one value."""
    if not isinstance(value, str) and hasattr(value, "tolist"):  # numpy and torch: their numbers as Python's
        value = value.tolist()
    if isinstance(value, str) or not isinstance(value, Iterable):
        return [value]
    return [
        item.tolist() if hasattr(item, "tolist") and not isinstance(item, str) else item for item in value
    ]


def samples_unconditionally(
    guidance: float, guided_by_model: bool = False, negative_prompt: Any = None
) -> bool:
    """True where guidance 0 leaves the unconditional prediction alone, so no label or prompt reaches the samples:
    not where a guide model (autoguidance) or a negative prompt takes the unconditional prediction's place."""
    return float(guidance) == 0.0 and not guided_by_model and negative_prompt is None


def requested_labels(
    condition: str | None,
    num_classes: int | None,
    labels: Any,
    guidance: float,
    n: int,
    source: Any,
    class_names: list[str] | None = None,
) -> tuple[SpreadLabels | None, list[int] | None]:
    """(class of each of samples 0..n-1, the classes asked for) as sample.py's labels=/guidance= define them:
    one label or a list, n spread over them in equal blocks; None: every class. A label is a class number or,
    where the model's classes have names (`class_names`), a name. (None, None) for an unconditional model, which
    refuses labels and guidance ≠ 1."""
    if condition is None:
        if labels is not None:
            raise ValueError(f"labels={labels} given, but {source} holds an unconditional model")
        if float(guidance) != 1.0:
            raise ValueError(
                f"guidance={guidance} needs a conditional model or guide=<a weaker model>; {source} is unconditional"
            )
        return None, None
    if condition != "labels":
        raise ValueError(f"{source}: cannot condition on {condition!r} yet")
    # A mapping or a set has no order of samples to spread over: before, {3: 1} sampled class 3 (its key).
    if isinstance(labels, Mapping | Set):
        raise ValueError(f"labels={labels!r} is not a label or a list of them (give labels=[3, 5])")
    wanted = list(range(num_classes)) if labels is None else as_list(labels)
    if class_names is not None and labels is not None:  # (None: every class, by number)
        wanted = [class_of(w, class_names, labels) for w in wanted]
    # A class is a whole number: 3.5 or true (which Python counts as 1) is no class.
    bad = [w for w in wanted if isinstance(w, bool) or not isinstance(w, int) or not 0 <= w < num_classes]
    if bad or not wanted:
        named = (
            ""
            if class_names is None
            else ", or their names; quote a name Hydra reads otherwise: labels='true'"
        )
        raise ValueError(
            f"labels={labels!r}: the model knows classes 0..{num_classes - 1} (give one or a list{named})"
        )
    if labels is not None:
        check_each_has_a_result("labels", labels, len(wanted), "classes", n)
    return spread_labels(wanted, n), wanted


def check_each_has_a_result(key: str, given: Any, count: int, what: str, n: int) -> None:
    """More labels or prompts than results: the last ones would get no sample without a word."""
    if count > n:
        raise ValueError(
            f"{key}={given} asks for {count} {what} but n={n}: give n of at least {count} (n is spread over them)"
        )


def prompt_list(value: Any, key: str) -> list[str]:
    """One prompt or a list of them as stripped strings; an empty one is an error (Hydra reads 7 as an int)."""
    if isinstance(value, bytes | bytearray):  # before, one prompt per byte: b"seven" was "115", "101", …
        raise ValueError(
            f"{key}={value!r} is bytes: give text (decode it first: {key}={value.decode(errors='replace')!r})"
        )
    items = [value] if isinstance(value, Mapping) else as_list(value)
    for item in items:
        # Hydra reads prompt=7 as a number, which is text to a user; a mapping, a nested list or true is not.
        if isinstance(item, bool) or not isinstance(item, str | int | float | None):
            raise ValueError(
                f"{key}={value!r} holds {item!r}, which is no caption: give text or a list of texts (quote a word "
                f"Hydra reads otherwise: {key}='true')"
            )
        # Hydra reads prompt=1e3 or 0.50 as a float: what was typed is gone (1000.0, 0.5), so nothing is embedded.
        if isinstance(item, float):
            raise ValueError(
                f"{key}={value!r} holds the number {item!r}, read from a word Hydra takes for a number: quote it to "
                f"keep it as typed, in single quotes inside double ones ({key}=\"'<the text>'\")"
            )
    texts = [str(item).strip() if item is not None else "" for item in items]
    example = EXAMPLE if key == "prompt" else f'{key}="a blurry smudge", or leave {key} out'
    if not any(texts):
        raise ValueError(f"{key} is empty: give a caption, e.g. {example}")
    if not all(texts):
        empty = ", ".join(str(i) for i, text in enumerate(texts) if not text)
        raise ValueError(
            f"{key}={items!r} holds an empty caption (item {empty}, counting from 0): give text for each"
        )
    return texts


def requested_conditions(
    model: TrainedModel,
    n: int,
    source: Any,
    labels: Any = None,
    prompt: Any = None,
    negative_prompt: Any = None,
    guidance: float = 1.0,
    guided_by_model: bool = False,
) -> Conditions:
    """The conditions of samples 0..n-1 asked for, checked against what `model` (read from `source`) takes.
    `guided_by_model`: guidance pulls away from a guide model (autoguidance), so an unconditional model takes it."""
    if model.condition == SUPERRES:
        raise ValueError(
            f"{source} is a super-resolution model: use mode=superres image=<low-res picture or folder>"
        )
    if not guided_by_model and negative_prompt is None:
        drop = (getattr(model, "config", None) or {}).get("cond_drop_prob")
        warn_if_never_unconditional(model.condition, drop, guidance, source)
    unconditional_only = samples_unconditionally(guidance, guided_by_model, negative_prompt)
    if unconditional_only and labels is not None and model.condition == "labels":
        raise ValueError(
            f"labels={labels} has no effect at guidance=0 (the unconditional prediction alone): give a guidance "
            "above 0 (1: the conditional prediction; above 1: guided towards the labels), or drop labels="
        )
    if model.condition == "text":
        if unconditional_only and prompt is not None:
            # Before, the prompt was embedded, recorded in settings.json and ignored.
            raise ValueError(
                f"prompt={prompt!r} has no effect at guidance=0 (the unconditional prediction alone): give a "
                "guidance above 0 (1: the prompt's prediction; above 1: guided towards it), or drop prompt= to "
                "sample the model unconditionally"
            )
        if unconditional_only and labels is None:
            return unconditional_text_conditions(model, n)
        return prompt_conditions(model, n, source, labels, prompt, negative_prompt, guidance)
    for key, value in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        if value is not None:
            hint = "" if model.condition != "labels" else ": give labels= instead"
            raise ValueError(f"{key}={value!r} given, but {source} holds {model_kind(model)}{hint}")
    if unconditional_only and model.condition == "labels":
        return unconditional_class_conditions(n)
    label_guidance = 1.0 if guided_by_model else guidance
    names = model_class_names(getattr(model, "config", None) or {})
    _, wanted = requested_labels(model.condition, model.num_classes, labels, label_guidance, n, source, names)
    return Conditions() if wanted is None else class_conditions(wanted, n)


def unconditional_class_conditions(n: int) -> Conditions:
    """A class model's n samples at guidance=0, its unconditional prediction alone: the net drops the label it is
    given, so one (class 0) only gives the input its shape, and no label is recorded, laid in grid rows or scored
    (before, every class was: settings.json listed labels the samples never saw, evaluate.py a cond_accuracy)."""
    return replace(class_conditions([0], n), nrow=None, blocks=None, labels=None)


def warn_if_never_unconditional(
    condition: str | None, cond_drop_prob: Any, guidance: float, source: Any
) -> None:
    """Classifier-free guidance extrapolates away from the model's unconditional prediction, which only training
    with cond_drop_prob > 0 teaches: at 0 the "no condition" input is never seen, and guidance pulls towards what
    its untrained embedding gives."""
    never_dropped = cond_drop_prob is not None and float(cond_drop_prob) == 0
    if condition in ("labels", "text") and float(guidance) != 1.0 and never_dropped:
        log.warning(
            "guidance=%s on %s, trained with cond_drop_prob=0: its unconditional prediction, which guidance pulls "
            "away from, was never trained; train with cond_drop_prob=0.1, or guide with a weaker model (guide=)",
            guidance,
            source,
        )


def warn_if_a_prompt_names_a_file(prompts: list[str]) -> None:
    """prompt=prompts.txt is a caption reading "prompts.txt", not the file's lines: said, since a file of prompts
    is what such a path usually means (before, it was embedded as it stood, without a word)."""
    for text in prompts:
        if "\n" not in text and _is_file(text):
            log.warning(
                "prompt=%s names a file, but prompts are captions, embedded as they are typed: give the "
                "captions themselves (prompt='a cat' or prompt=['a cat','a dog'])",
                text,
            )


def _is_file(text: str) -> bool:
    """Whether `text` names a file; a caption no path can be (a part over the system's name limit) names none."""
    try:
        return Path(text).expanduser().is_file()
    except (OSError, ValueError):
        return False


def unconditional_text_conditions(model: TrainedModel, n: int) -> Conditions:
    """A text model's n samples at guidance=0, its unconditional prediction alone: the net swaps the dropped text
    for its learned null text, so a one-token blank of the encoder's width only gives the input its shape (no
    encoder is loaded), and no prompt is recorded."""
    width = int(model.config["model"]["text_dim"])
    blank = TextTable(
        [""], torch.zeros(1, 1, width), torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, width)
    )
    # Laid out about square: one blank prompt's row would put every sample on one row (the first 32 shown).
    return replace(text_conditions(blank, n), prompts=None, nrow=None, blocks=None)


def prompt_conditions(
    model: TrainedModel, n: int, source: Any, labels: Any, prompt: Any, negative_prompt: Any, guidance: float
) -> Conditions:
    """n samples spread over the prompts (one grid row each), guided against negative_prompt when given; the
    prompts are embedded with the encoder the model was trained with (through the on-disk cache)."""
    if labels is not None:
        raise ValueError(
            f"labels={labels} given, but {source} holds a text-to-image model; give {EXAMPLE} instead"
        )
    if prompt is None:
        raise ValueError(f"{source} holds a text-to-image model: give {EXAMPLE}")
    prompts = prompt_list(prompt, "prompt")
    check_each_has_a_result("prompt", prompt, len(prompts), "prompts", n)
    warn_if_a_prompt_names_a_file(prompts)
    negatives = None if negative_prompt is None else prompt_list(negative_prompt, "negative_prompt")
    if negatives is not None and len(negatives) != 1:
        raise ValueError("negative_prompt takes one caption (it replaces the unconditional branch for all)")
    if negatives is not None and float(guidance) == 1.0:
        # Guidance 1 is the prompt's prediction alone: the branch the negative prompt replaces is not used.
        raise ValueError(
            f"negative_prompt={negative_prompt!r} has no effect at guidance=1 (the prompt's prediction alone): "
            "give a guidance above 1 (e.g. guidance=3), or drop negative_prompt"
        )
    if negatives is not None and float(guidance) < 1.0:
        # Below 1 the replaced branch's prediction is weighted by 1 - guidance: the samples move towards it (at 0
        # they are the negative prompt's alone).
        raise ValueError(
            f"negative_prompt={negative_prompt!r} at guidance={float(guidance):g} draws the samples towards the "
            "negative prompt (its prediction is weighted by 1 - guidance), not away: give a guidance above 1 "
            "(e.g. guidance=3), or drop negative_prompt"
        )
    data = model.config["data"]
    encoder = data["text_encoder"]
    version = encoder_version(encoder)
    stored = data.get("text_encoder_version")
    if stored and stored != version:
        log.warning("the model was trained with %s %s; %s is installed and used", encoder, stored, version)
    max_tokens = int(data["max_tokens"])
    table = embed_texts(prompts + (negatives or []), encoder, version, max_tokens, data.get("text_cache_dir"))
    negative = None if negatives is None else table.subset([len(prompts)])
    return text_conditions(table.subset(range(len(prompts))), n, negative=negative)
