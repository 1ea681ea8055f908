"""One request generated into a results folder as sample.py writes it: PNGs, a grid (edits and super-resolution
beside their inputs), an .npz and settings.json (the settings that made them)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..cluster.processes import ONE_PROCESS, Processes, from_rank_0
from ..io.results import RESULTS_SETTINGS, OutputFolder, write_json
from ..io.write_images import enlarge, grid_of, writing_samples
from ..sample_options import SampleOptions
from .finite import check_finite
from .grids import GRID_COLUMNS, GRID_ROWS, comparison_tiles, grid_indices, laid_out
from .images import Generation
from .memory import check_disk_room
from .report import log_line, progress
from .request import GenerationRequest
from .resume import ResumePlan, finished, plan_for, record
from .set_identity import set_identity
from .settings_json import SETTINGS_JSON, edit_settings
from .shares import SharedGeneration
from .threads import png_writer_threads

log = logging.getLogger("difflab")


def generate_into(
    folder: OutputFolder,
    request: GenerationRequest,
    loaded: Any,
    options: SampleOptions,
    sampler_config: dict[str, Any],
    ckpt: str,
    processes: Processes = ONE_PROCESS,
    guide: Any = None,
    resume: bool = False,
) -> tuple[int, dict[str, Path]]:
    """Generate `request` with `loaded`'s net into `folder`, writing each batch as it comes (memory holds one
    batch and the grid's tiles); returns the count and the files written (`loaded`: a checkpoint.LoadedModel;
    `sampler_config`: the sampler as configured, for settings.json; `guide`: the loaded autoguidance model). A
    folder a stopped run left is continued from its batches on disk (resume: the user asked for that; see
    generation.resume). Under several processes this is rank 0's part: it writes what every rank makes (the
    others run generate_share)."""
    out, count = folder.path, len(request.indices)
    identity = set_identity(options, sampler_config, loaded, guide)
    plan = from_rank_0(plan_for(folder, identity, count, resume), processes)
    request = plan.applied(request)
    if plan.batch_size is not None:
        log.info(*plan.resume_line(out, request))
    check_disk_room(out, len(request.indices), tuple(loaded.sample_shape))
    log.info(*log_line(options, loaded, request))
    generation = Generation(request, loaded.sampling_net)
    shared = SharedGeneration(generation, loaded.sample_shape, processes)
    sampling = options.mode == "sample"
    row = request.conditions.nrow if sampling else request.per_picture
    shown, columns = grid_indices(count, row, request.conditions.blocks if sampling else None)
    wanted = {i for i in shown if i is not None}
    tiles: dict[int, Tensor] = {}
    with (
        generation.cpu_threads() as cpu_threads,
        progress(options, len(request.indices), shared.steps) as on_step,
        writing_samples(out, count, png_writer_threads(generation.placement)) as files,
    ):
        record(out, identity, plan, shared.batch_size, cpu_threads)  # before the first image is made
        for images, on_disk in plan.in_index_order(shared.batches(on_step), files.read_back):
            first = files.written
            check_finite(images, ckpt, (first, first + len(images) - 1, count), options.guidance)
            files.add(images, on_disk)
            tiles.update({i: images[i - first] for i in range(first, first + len(images)) if i in wanted})
        if request.pictures is None:
            files.save_grid(enlarge(grid_of(laid_out(tiles, shown), columns)))
        else:  # edits and super-resolution: the grid compares results with inputs
            kept = torch.stack([tiles[i] for i in shown if i is not None])
            files.save_grid(enlarge(grid_of(*comparison_tiles(request, kept, columns))))
    if len(wanted) < count:
        log.info(
            "grid.png shows %d of the %d results (at most %d rows of %d)",
            len(wanted),
            count,
            GRID_ROWS,
            GRID_COLUMNS,
        )
    report = SETTINGS_JSON.get(options.mode, edit_settings)
    write_json(
        report(ckpt, sampler_config, options, loaded, shared.mine, cpu_threads), out / RESULTS_SETTINGS
    )
    finished(out)
    return count, {"images": out / "images", "grid": out / "grid.png", "npz": out / "samples.npz"}


def generate_share(request: GenerationRequest, loaded: Any, processes: Processes) -> None:
    """A rank other than 0's part of generate_into: generate its batches (those rank 0 lacks, when it continues
    a stopped run's set) and send them to rank 0."""
    plan: ResumePlan = from_rank_0(None, processes)
    generation = Generation(plan.applied(request), loaded.sampling_net)
    shared = SharedGeneration(generation, loaded.sample_shape, processes)
    with generation.cpu_threads():
        for _ in shared.batches():
            pass
