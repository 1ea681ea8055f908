"""What a run prints: a compact summary of the composed config at start, none of the library noise a user
cannot act on (Lightning's litlogger tip and internal deprecations, W&B's "anonymous" warning), and all of it
kept in the run's log file (Lightning's messages and warnings too), as lightning-hydra-template's train.log."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TextIO

from ..console_log import echo, log_files, own_warnings_plain, to_log_files, write_what_was_said_before

log = logging.getLogger("difflab")

# (logger name, text a record starts with) of messages that carry nothing for a difflab user.
_NOISE = (
    ("lightning.pytorch.utilities.rank_zero", "💡 Tip"),
    ("lightning.pytorch", "💡 Tip"),
    # compile= on a machine without CUDA: inductor compiles for the CPU and needs no CUDA runtime.
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),
)


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(record.name.startswith(name) and message.startswith(text) for name, text in _NOISE)


def quiet_library_noise() -> None:
    """Install the filters (idempotent): Lightning's tips, a deprecation raised inside Lightning itself; difflab's
    own warnings shown as their message alone."""
    own_warnings_plain()
    for name in {name for name, _ in _NOISE}:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    # Raised by Lightning's own pytree helper under torch 2.14; nothing a user's code does causes it.
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    # Raised by Lightning's own all_gather (which difflab's grids and FID use under DDP) under torch 2.14.
    warnings.filterwarnings("ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated")
    # Wrong for difflab's runs: metrics are logged every log_every_n_steps optimizer steps across epochs.
    warnings.filterwarnings("ignore", message=r"The number of training batches .* logging interval")
    # debug=overfit asks for it: the same few batches, in order, every epoch.
    warnings.filterwarnings(
        "ignore", message=r"You requested to overfit but enabled train dataloader shuffling"
    )
    # DiffusionModule.configure_model shards only under trainer=fsdp, where difflab's EMA copies and shards itself.
    warnings.filterwarnings(
        "ignore", message=r"You're using the WeightAveraging callback with a model that overrides"
    )


# Lightning's loggers: each prints through a stderr handler of its own ("lightning" always, the other two unless
# the root logger had a handler when they were imported).
LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


def keep_console_in_run_log() -> None:
    """Where the run has a log file (Hydra's <run>/train.log), send Lightning's messages through the root logger
    (console and file) and copy every warning shown into the file. Idempotent; nothing changes without a file."""
    if not log_files():
        return
    write_what_was_said_before()
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True
    if not getattr(warnings.showwarning, "keeps_run_log", False):
        warnings.showwarning = _shown_and_logged(warnings.showwarning)


def _shown_and_logged(show: Callable[..., None]) -> Callable[..., None]:
    """Python's warning display (stderr) followed by the same text in the run's log file."""

    def showwarning(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        show(message, category, filename, lineno, file, line)
        if file is None:  # shown on the console
            text = warnings.formatwarning(message, category, filename, lineno, line)
            to_log_files(text.rstrip(), logging.WARNING)

    showwarning.keeps_run_log = True  # type: ignore[attr-defined]
    return showwarning


# The groups only a diffusion run reads (an autoencoder run composes them too, unused).
DIFFUSION_ONLY = ("formulation", "schedule", "sampler")
# The fields of each group that tell runs apart, in the order shown.
SUMMARY_FIELDS = {
    "data": ("dataset", "image_size", "channels", "batch_size", "condition"),
    "model": (
        "base_channels",
        "channel_mults",
        "num_res_blocks",
        "attention_resolutions",
        "num_classes",
        "patch_size",  # a DiT's
        "hidden_size",
        "depth",
        "num_heads",
        "block_out_channels",  # an autoencoder's
        "latent_channels",
    ),
    "formulation": ("prediction_type", "weighting", "t_sampling", "shift", "sigma_data"),
    "schedule": ("name", "timesteps"),
    "sampler": ("steps", "eta", "clip_x0"),
    "optim": ("lr", "weight_decay"),
    "trainer": (
        "fast_dev_run",
        "max_steps",
        "max_epochs",
        "precision",
        "accelerator",
        "devices",
        "num_nodes",
    ),
}


ENDLESS = "no step or epoch limit (trains until stopped; Ctrl-C or SIGTERM saves last.ckpt)"


def _describe(node: Any, fields: tuple[str, ...]) -> str:
    if not isinstance(node, dict):
        return str(node)
    shown = {k: node[k] for k in fields if node.get(k) is not None}
    # Lightning's fast_dev_run runs one batch (or n) whatever max_steps says: show the one that holds.
    shown.pop("max_steps" if node.get("fast_dev_run") else "fast_dev_run", None)
    for limit in ("max_steps", "max_epochs"):  # -1: no limit of that kind
        if shown.get(limit) == -1:
            shown.pop(limit)
    parts = [f"{k}={v}" for k, v in shown.items()]
    if "max_steps" in node and not {"max_steps", "max_epochs", "fast_dev_run"} & shown.keys():
        # Neither limit ends the run: Lightning then stops after 1000 epochs if max_epochs is null, else never.
        endless = node.get("max_epochs") is not None
        parts.insert(0, ENDLESS if endless else "max_epochs=1000 (Lightning's default)")
    return ", ".join(parts)


def _formulation_ignores_schedule(config: Mapping[str, Any]) -> bool:
    formulation = config.get("formulation")
    return isinstance(formulation, dict) and "schedule" not in formulation


def config_summary(
    config: Mapping[str, Any], choices: dict[str, Any] | None = None, extra: dict[str, str] | None = None
) -> str:
    """One line per main group of the resolved `config`: its choice (data=digits) and its key values; then
    `extra` lines."""
    lines = []
    for group, fields in SUMMARY_FIELDS.items():
        if group == "schedule" and _formulation_ignores_schedule(config):
            continue  # edm and flow have their own noise levels: a `schedule=linear` line would mislead
        if group in DIFFUSION_ONLY and config.get("task") == "autoencoder":
            continue  # an autoencoder run neither noises nor samples
        if group in config:
            choice = (choices or {}).get(group)
            label = f"{group}={choice}" if choice else group
            lines.append(f"  {label:<24} {_describe(config[group], fields)}")
    for key, value in (extra or {}).items():
        lines.append(f"  {key:<24} {value}")
    return "\n".join(lines)


def print_summary(title: str, body: str) -> None:
    """The summary in a rich panel on a terminal, as plain lines in a log file (and in the run's log file)."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.panel import Panel

        Console().print(Panel(body, title=title, expand=False))
        to_log_files(f"{title}\n{body}")
    else:
        echo(f"{title}\n{body}")


def print_run_summary(config: Mapping[str, Any], parameters: int, output_dir: Path) -> None:
    """The summary a training run opens with: its experiment, what it trains, its size and its run folder."""
    choices = config.get("choices", {})
    experiment = choices.get("experiment")
    title = f"difflab train · experiment={experiment}" if experiment else "difflab train"
    extra = {"parameters": f"{parameters:,}", "run folder": str(output_dir)}
    print_summary(title, config_summary(config, choices, extra))


def log_run_outputs(output_dir: Path, metrics: Mapping[str, Any], checkpoints: Path | None) -> None:
    """Where a finished run left its files (run folder, `checkpoints`: the folder of its periodic checkpoints, None
    when it keeps none; sample grids) and its last val/ scores."""
    log.info("run folder: %s", output_dir)
    if checkpoints is not None:
        log.info("checkpoints: %s", checkpoints)
    else:
        # Before, a run of callbacks=none ended as any other, its weights gone with it.
        log.warning(
            "no checkpoint kept: the trained weights are not saved (callbacks.model_checkpoint=null, as "
            "callbacks=none and debug=… set it; they keep one only on a stop signal or a failure)"
        )
    if (output_dir / "samples").is_dir():
        log.info("sample grids: %s (final.png is the last)", output_dir / "samples")
    scores = {k: float(v) for k, v in metrics.items() if k.startswith("val/")}
    if scores:
        log.info("last scores: %s", ", ".join(f"{k}={v:.4g}" for k, v in sorted(scores.items())))
