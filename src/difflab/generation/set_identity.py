"""What decides a sample set's images, recorded beside an unfinished set so that only the same settings continue
it: the options that change the images, the sampler, the model's weights and config, the guide's weights and the
bytes of the pictures and masks read (paths aside: what they hold is compared, wherever it now lies)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..io.read_inputs import image_files
from ..models.weights_hash import weights_fingerprint
from ..sample_options import SampleOptions

# The options that change the images (paths aside: what they hold is compared, wherever it now lies).
DECIDING_OPTIONS = (
    *("mode", "n", "seed", "precision", "guidance", "labels", "prompt", "negative_prompt"),
    *("strength", "inpaint", "consistency"),
)


def set_identity(
    options: SampleOptions, sampler_config: Mapping[str, Any], loaded: Any, guide: Any = None
) -> dict[str, Any]:
    """What decides a set's images, as JSON values to compare: the options that change them, the sampler, the
    model's weights and config (not the checkpoint's path), the guide's weights, and the bytes of the pictures
    and masks read."""
    identity = {key: _plain(getattr(options, key)) for key in DECIDING_OPTIONS}
    config = json.dumps(_plain(loaded.config), sort_keys=True, default=str).encode()
    identity["model"] = (
        f"weights {weights_fingerprint(loaded.net)}, config {hashlib.sha256(config).hexdigest()[:16]}"
    )
    identity["guide model"] = None if guide is None else f"weights {weights_fingerprint(guide.net)}"
    # After the model, which sets some of its values (an EDM model's karras spacing): before, another model was
    # named as the sampler.timestep_spacing the user never typed.
    identity["sampler"] = _plain(sampler_config)
    identity["pictures"] = _files_hash(options.image)
    identity["masks"] = _files_hash(options.mask)
    return identity


def _plain(value: Any) -> Any:
    """`value` as JSON has it (config lists and mappings as lists and dicts, tuples as lists)."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_plain(item) for item in value]
    return value


def _files_hash(path: str | Path | None) -> str | None:
    """sha256 of the pictures at `path` (a file or a folder of them), names and bytes; None for no path."""
    if path in (None, ""):
        return None
    digest = hashlib.sha256()
    for file in image_files(path):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


def _first_difference(was: Any, now: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, value then, value now) of the first setting that differs; None when none does."""
    if isinstance(was, dict) and isinstance(now, dict):
        for name in [*now, *(name for name in was if name not in now)]:
            found = _first_difference(was.get(name), now.get(name), f"{key}.{name}" if key else name)
            if found is not None:
                return found
        return None
    return None if was == now else (key, was, now)


def _shown(value: Any) -> str:
    return json.dumps(value) if not isinstance(value, str) else value


def changed_setting(was: dict[str, Any], now: dict[str, Any]) -> str | None:
    """ "it was started with k=v, this command has k=w" for the first setting of two identities that differs
    (dotted into the sampler's), None when none does."""
    differing = _first_difference(was, now)
    if differing is None:
        return None
    key, then, given = differing
    return f"it was started with {key}={_shown(then)}, this command has {key}={_shown(given)}"
