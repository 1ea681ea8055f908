"""What a user asks sample.py (or difflab.load(...).sample()) for, as plain values under sample.py's own key
names, and the checks that need no model: so a bad request is one line before anything is loaded. Plain Python
(no torch), so that sample.py and evaluate.py answer a bad value in about a second; generation/ builds on it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .value_rules import check_named, check_strength, number, or_auto, whole

SUPERRES = "superres"
EDIT_MODES = ("inpaint", "img2img")
MODES = ("sample", *EDIT_MODES, SUPERRES)
# The values sample.py's config rules also hold (run/sampling_settings.py): a Python caller gets the same line.
NUMBER_RULES = {
    # Sample i's noise comes from (seed, i) mod 2**63: a larger seed repeats a smaller one.
    "seed": whole(0, maximum=2**63 - 1),
    "batch_size": or_auto(whole(1)),
    "cpu_threads": or_auto(whole(1)),
    "guidance": number(0.0),
}


@dataclass
class SampleOptions:
    """sample.py's keys: n results (per picture when editing), mode, seed, batch_size, precision, cpu_threads,
    guidance, and what a mode or a conditional model takes (None: not given)."""

    mode: str
    n: int
    seed: int
    batch_size: int | str | None
    precision: str
    cpu_threads: int | str | None
    guidance: float
    labels: Any = None
    prompt: Any = None
    negative_prompt: Any = None
    image: str | Path | None = None  # a picture or a folder of them (edits, super-resolution)
    mask: str | Path | None = None  # inpaint: a mask or a folder of masks named like the pictures
    strength: float | None = None  # img2img (None: not given; img2img then takes sample.py's default)
    # RePaint's steps, jump_length, jump_n_sample (outside inpaint: only those given)
    inpaint: Mapping[str, int] | None = None
    consistency: Any = False  # superres.consistency: project so that down(output) = input
    guide: Any = None  # autoguidance: a weaker model's checkpoint or folder; guidance= pulls away from it

    def check(self) -> None:
        """What the mode needs, checked before any model is loaded."""
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; choose one of {', '.join(MODES)}")
        self._check_numbers()
        if isinstance(self.guide, str) and not self.guide.strip():
            # Before, an empty guide= (an unset $GUIDE) passed the checks as "no guide", then was read as the
            # current folder: its checkpoints/last.ckpt guided the samples.
            raise ValueError(
                "guide= is empty: give a weaker checkpoint of the same data (autoguidance), or leave guide= off"
            )
        if self.guide is not None and float(self.guidance) == 0.0:
            raise ValueError(
                f"guide={self.guide} at guidance=0 gives the guide's own samples (guide + 0·(model − guide)): give "
                "a guidance above 1 (e.g. guidance=2), or sample the guide itself"
            )
        if self.guide not in (None, "") and float(self.guidance) == 1.0:
            # Autoguidance is guide + guidance·(model − guide): the model's prediction alone at guidance 1.
            raise ValueError(
                f"guide={self.guide} has no effect at guidance=1 (the model's prediction alone): give a guidance "
                "above 1 (e.g. guidance=2), or drop guide="
            )
        self._check_picture_paths()
        self._refuse_inputs_the_mode_does_not_read()
        if self.mode == SUPERRES:
            self._check_superres()
        elif self.mode in EDIT_MODES:
            self._check_edit()

    def _check_numbers(self) -> None:
        """seed, batch_size, cpu_threads and guidance held to sample.py's rules, in its words: a Python caller has
        no config, and these values otherwise fail deep inside (range(), the samples' NaN check) or are taken
        silently (seed=1.5 as 1, guidance=-1)."""
        check_named({key: getattr(self, key) for key in NUMBER_RULES}, NUMBER_RULES)

    def _check_picture_paths(self) -> None:
        """image= and mask= are paths, as on sample.py's command line: a picture in memory (a PIL image, an
        array) would otherwise fail deep inside with Python's own TypeError."""
        for key in ("image", "mask"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str | Path):
                # A list of paths (image=[a.png,b.png] on the command line) is no picture to save: say what is taken.
                listed_paths = isinstance(value, list | tuple) and all(
                    isinstance(v, str | Path) for v in value
                )
                how = "put them in one folder" if listed_paths else "save it (PNG) and pass its path"
                raise ValueError(
                    f"{key}= takes the path of a picture or of a folder of them, not a {type(value).__name__}: "
                    f"{how}"
                )

    def _refuse_inputs_the_mode_does_not_read(self) -> None:
        """A picture, mask or consistency switch that the mode would ignore: most likely a forgotten or wrong
        mode=, which would otherwise give unrelated samples without a word."""
        if self.image not in (None, "") and self.mode == "sample":
            raise ValueError(
                f"image={str(self.image)!r} given, but mode=sample does not read it: add mode=img2img, "
                "mode=inpaint (with mask=) or mode=superres"
            )
        if self.mask not in (None, "") and self.mode != "inpaint":
            raise ValueError(
                f"mask={str(self.mask)!r} given, but mode={self.mode} does not read it (only mode=inpaint does)"
            )
        if self.strength is not None and self.mode != "img2img":
            raise ValueError(
                f"strength={self.strength} given, but mode={self.mode} does not read it (only mode=img2img does)"
            )
        if self.inpaint and self.mode != "inpaint":
            given = ", ".join(f"inpaint.{key}={value}" for key, value in self.inpaint.items())
            raise ValueError(f"{given} given, but mode={self.mode} does not read it (only mode=inpaint does)")
        if self.consistency is True and self.mode != SUPERRES:
            raise ValueError(
                f"superres.consistency=True given, but mode={self.mode} does not read it (only mode=superres does)"
            )

    def _check_superres(self) -> None:
        _require(self.image, "mode=superres needs image=<low-resolution picture or folder of pictures>")
        for key in ("labels", "prompt", "negative_prompt"):
            if (value := getattr(self, key)) is not None:
                raise ValueError(f"{key}={value} given, but mode=superres conditions on image= only")
        if not isinstance(self.consistency, bool):
            raise ValueError(f"superres.consistency={self.consistency!r} must be true or false")
        refuse_superres_guidance(self.guidance, self.guide, "with mode=superres")

    def _check_edit(self) -> None:
        _require(self.image, f"mode={self.mode} needs image=<picture or folder of pictures>")
        if self.mode == "inpaint":
            _require(
                self.mask, "mode=inpaint needs mask=<PNG the picture's size, white = generate, or a folder>"
            )
        else:
            check_strength(self.strength)


def _require(value: Any, message: str) -> None:
    if value in (None, ""):
        raise ValueError(message)


def refuse_sampler_settings(mode: str, given: list[str]) -> None:
    """Sampler settings given for mode=inpaint, which runs RePaint's DDPM steps of its own: before, sampler=heun
    (or sampler.steps=2) there gave the same pixels as without it, without a word."""
    if mode == "inpaint" and given:
        raise ValueError(
            f"{' '.join(given)} given, but mode=inpaint does not read it (RePaint runs DDPM steps of its own: "
            "set inpaint.steps, inpaint.jump_length, inpaint.jump_n_sample)"
        )


def refuse_superres_guidance(guidance: float, guide: Any, where: str) -> None:
    """Classifier-free guidance of a super-resolution model (`where`: how the message names it) without a guide:
    the low-res image is never dropped in training, so there is no unconditional branch to guide against."""
    if float(guidance) != 1.0 and guide is None:
        raise ValueError(
            f"guidance={guidance} has no effect {where}: the low-res image is never dropped, so there is no "
            "unconditional branch; drop guidance= (or guide with a weaker model: guide=)"
        )
