"""RePaint's resampling schedule: which noise levels to visit, going down and jumping back up."""

from __future__ import annotations


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) < 1:
            raise ValueError(f"{name} must be at least 1 (got {value})")


def jump_schedule(steps: int, jump_length: int = 10, jump_n_sample: int = 10) -> list[int]:
    """Levels visited by RePaint, from steps-1 (noisiest) down to -1 (clean data), with jumps back up.

    Level k is the k-th smallest timestep of the sampling grid. On arriving at a level that is a
    multiple of jump_length (and leaves jump_length levels above it), the walk climbs jump_length
    levels back up and descends again, jump_n_sample-1 times per such level (Lugmayr et al. 2022, §4.2).
    A step down costs one model call; a step up is a cheap forward re-noising.
    """
    _check_positive(steps=steps, jump_length=jump_length, jump_n_sample=jump_n_sample)
    jumps_left = {level: jump_n_sample - 1 for level in range(0, steps - jump_length, jump_length)}
    level = steps - 1
    path = [level]
    while level >= 0:
        level -= 1
        path.append(level)
        if jumps_left.get(level, 0) > 0:
            jumps_left[level] -= 1
            path.extend(range(level + 1, level + jump_length + 1))
            level += jump_length
    return path


def repaint_model_calls(steps: int, jump_length: int = 10, jump_n_sample: int = 10) -> int:
    """Model calls (steps down) of `jump_schedule`, in closed form: steps + (r-1)·j·(number of jump levels)."""
    _check_positive(steps=steps, jump_length=jump_length, jump_n_sample=jump_n_sample)
    jump_levels = len(range(0, steps - jump_length, jump_length))
    return steps + (jump_n_sample - 1) * jump_length * jump_levels
