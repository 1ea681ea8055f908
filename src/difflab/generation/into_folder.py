"""One request generated into a results folder as sample.py writes it: PNGs, a grid (edits and super-resolution
beside their inputs), an .npz and settings.json (the settings that made them)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ..io.results import write_json
from ..io.write_images import enlarge, grid_of, save_png, save_samples
from .finite import check_finite
from .grids import comparison_tiles
from .images import Generation
from .options import SampleOptions
from .report import log_line, progress
from .request import GenerationRequest
from .settings_json import SETTINGS_JSON, edit_settings

log = logging.getLogger("difflab")


def generate_into(
    out: Path,
    request: GenerationRequest,
    loaded: Any,
    options: SampleOptions,
    sampler_config: dict[str, Any],
    ckpt: str,
) -> tuple[int, dict[str, Path]]:
    """Generate `request` with `loaded`'s net into the folder `out`; returns the count and the files written
    (`loaded`: a checkpoint.LoadedModel; `sampler_config`: the sampler as configured, for settings.json)."""
    log.info(*log_line(options, loaded, request))
    generation = Generation(request, loaded.sampling_net)
    with generation.cpu_threads() as cpu_threads, progress(options, generation) as on_step:
        images = generation.images(on_step).cpu()
    check_finite(images, ckpt)
    nrow = request.conditions.nrow if options.mode == "sample" else request.per_picture
    written = save_samples(images, out, nrow=nrow)
    if request.pictures is not None:  # edits and super-resolution: the grid compares results with inputs
        save_png(enlarge(grid_of(*comparison_tiles(request, images))), written["grid"])
    report = SETTINGS_JSON.get(options.mode, edit_settings)
    write_json(report(ckpt, sampler_config, options, loaded, generation, cpu_threads), out / "settings.json")
    return len(images), written
