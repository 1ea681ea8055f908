"""What to generate and how: a request built once (indices, seed, batch size, guidance, negative condition,
precision, sampler or editing method, conditions) and the one call that turns it into images. sample.py in every
mode, evaluate.py, the grid and FID callbacks and difflab.load(...).sample() all generate through here."""

from ..sample_options import MODES, SampleOptions
from .conditions import Conditions
from .grids import comparison_tiles, grid_tiles
from .images import Generation, generate_images
from .modes import request_for, sampling_request
from .request import GenerationRequest
from .requested import requested_conditions
from .sampler import build_sampler, walked_config
from .task import Task, grid_conditions

__all__ = [
    "MODES",
    "Conditions",
    "Generation",
    "GenerationRequest",
    "SampleOptions",
    "Task",
    "build_sampler",
    "comparison_tiles",
    "generate_images",
    "grid_conditions",
    "grid_tiles",
    "request_for",
    "requested_conditions",
    "sampling_request",
    "walked_config",
]
