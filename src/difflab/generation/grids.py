"""How a set of results is laid out in a grid: the samples (one row per class or prompt), (input, sample) pairs
for a training run's super-resolution, and the comparisons sample.py draws for edits and super-resolution."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor

from ..diffusion.superres import nearest_upsample, upsample
from .conditions import Conditions
from .methods import Inpaint, Sampling
from .request import GenerationRequest

# A grid shows at most 32 rows of 32 tiles (sample.py n=50000 still draws a grid a person can open).
GRID_ROWS = GRID_COLUMNS = 32


def grid_indices(
    count: int, row: int | None, blocks: int | None = None
) -> tuple[list[int | None], int | None]:
    """Which of `count` results a grid shows, in order, and its row width. `row`: results per row (one row per
    class, prompt or input picture); None lays them out about square. All of them when they fit GRID_ROWS rows of
    GRID_COLUMNS; else the first GRID_COLUMNS of each of the first GRID_ROWS rows (unlaid: the first ones).
    `blocks`: the results are k conditions spread in contiguous blocks (class_conditions), each given a row of its
    own, its empty places None (blank tiles): before, 10 samples of 3 labels in rows of 4 read 3333 / 7779 / 99."""
    if row is None:
        return list(range(min(count, GRID_ROWS * GRID_COLUMNS))), None
    columns = min(row, GRID_COLUMNS)
    if blocks is None:
        rows = min(math.ceil(count / row), GRID_ROWS)
        return [r * row + c for r in range(rows) for c in range(columns) if r * row + c < count], columns
    # Block j holds the samples i with i·k // count = j: from ceil(j·count / k) up to the next block's start.
    starts = [-(-j * count // blocks) for j in range(blocks + 1)]
    laid = [list(range(a, b))[:columns] for a, b in zip(starts, starts[1:], strict=False) if b > a]
    return [i for r in laid[:GRID_ROWS] for i in [*r, *[None] * (columns - len(r))]], columns


def grid_tiles(conditions: Conditions, images: Tensor) -> tuple[Tensor, int | None]:
    """The tiles of a grid and its row width: the samples (one row per condition, see grid_indices), or (input,
    sample) pairs side by side when the conditions carry inputs (nrow then counts pairs, about square when
    unset)."""
    if conditions.inputs_for is None:
        shown, columns = grid_indices(len(images), conditions.nrow, conditions.blocks)
        return laid_out(images, shown), columns
    n = len(images)
    inputs = conditions.inputs_for(range(n)).to(images.device, images.dtype)
    # About square, rows full: the first divisor of n from sqrt(n / 2) pairs on (32 -> 4, 64 -> 8).
    pairs = conditions.nrow or next(
        k for k in range(max(1, math.ceil(math.sqrt(n / 2))), n + 1) if n % k == 0
    )
    return torch.stack([inputs, images], 1).flatten(0, 1), 2 * pairs


def laid_out(images: Tensor | Mapping[int, Tensor], shown: list[int | None]) -> Tensor:
    """images[i] for each i of `shown` (a batch, or the tiles kept by index), a blank (white) tile for each None."""
    blank = torch.ones_like(images[next(i for i in shown if i is not None)])
    return torch.stack([blank if i is None else images[i] for i in shown])


def comparison_tiles(
    request: GenerationRequest, results: Tensor, per_picture: int | None = None
) -> tuple[Tensor, int]:
    """One row per picture of an edit or a super-resolution and its row width: super-resolution: the input
    nearest-upsampled | its bicubic upsampling | its outputs; edits: the input | the input with the hole grey
    (inpaint) | its results. `results`: `per_picture` (default: all) results of each of the first pictures."""
    assert request.pictures is not None, "comparison_tiles needs a request made from pictures"
    n = per_picture or request.per_picture
    pictures = request.pictures.images[: len(results) // n]
    method = request.method
    rows = []
    for i, picture in enumerate(pictures):
        if isinstance(method, Sampling):  # super-resolution
            size = results.shape[-1]
            row = [nearest_upsample(picture[None], size), upsample(picture[None], size)]
        else:
            row = [picture[None]]
            if isinstance(method, Inpaint):
                masks = method.masks
                mask = masks[i if masks.shape[0] > 1 else 0][None].float()
                # A latent model's mask is at latent resolution: shown as the image pixels it generates.
                mask = torch.nn.functional.interpolate(mask, size=picture.shape[-2:], mode="nearest")[0]
                hole = (mask > 0.5).expand_as(picture)
                row.append(torch.where(hole, torch.zeros_like(picture), picture)[None])  # 0 is mid-grey
        row.append(results[i * n : (i + 1) * n])
        rows.append(torch.cat(row))
    return torch.cat(rows), len(rows[0])
