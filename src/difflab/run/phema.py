"""Post-hoc EMA's sweep: rebuild each σ_rel of a list (training/phema_reconstruct.py), score each with evaluate.py's
Fréchet distance (training/phema_scores.py) under evaluate.py's config and overrides, checked before any work. The
same sweep run again after a stop continues: what it had rebuilt and scored is kept."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from ..training.phema import check_sigma_rel
from ..training.phema_reconstruct import plan, reconstruct, sigma_rel_text
from ..training.phema_scores import ROOT, Scored, done_before, record_sweep, score
from .cli import check_command_line
from .evaluate_settings import read_evaluate_settings

CONF_DIR = ROOT / "conf"
log = logging.getLogger("difflab")


def sweep(
    run: str | Path,
    sigma_rels: Sequence[float],
    eval_overrides: Sequence[str] = (),
    out: str | Path | None = None,
    step: int | None = None,
) -> tuple[list[Scored], str]:
    """Reconstruct each σ_rel (into the folder `out`, default <run>/phema) and score it as evaluate.py does (its
    overrides: n=, sampler=, metrics=, …); returns the rows and the Fréchet distance's name. Every input and
    output is checked before any work."""
    if len({sigma_rel_text(s) for s in sigma_rels}) != len(sigma_rels):  # one output file per named value
        raise ValueError(f"sigma_rel lists a value twice: {list(sigma_rels)}")
    for sigma_rel in sigma_rels:
        check_sigma_rel(sigma_rel)
    plans = [plan(run, s, step=step, folder=out, existing=True) for s in sigma_rels]
    # A mistyped key or a bad value (n=abc) is refused before anything is written: before, a bad value was met by
    # the first evaluate.py, after a rebuild and a record holding it, which the corrected command then refused.
    config = eval_config(eval_overrides)
    with open_dict(config):
        config.ckpt = str(plans[0].template)  # what each evaluate.py is given (a rebuild of it)
    read_evaluate_settings(config)
    check_autoencoder_fits(plans[0].template, config.get("autoencoder"), tuple(config.allowed_targets))
    fd_key = fd_name(config)
    done = [done_before(p, eval_overrides) for p in plans]
    rows = []
    for p, state in zip(plans, done, strict=True):
        report = p.out.with_suffix(".metrics.json")  # each report beside its checkpoint
        if state == "scored":
            log.info("sigma_rel=%s: scored before, kept (%s)", sigma_rel_text(p.sigma_rel), report)
            scores = json.loads(report.read_text())["metrics"]
        else:
            if state == "rebuilt":
                log.info("sigma_rel=%s: rebuilt before, kept (%s)", sigma_rel_text(p.sigma_rel), p.out)
            else:
                record_sweep(p, eval_overrides)
                reconstruct(p)
            scores = score(p.out, report, eval_overrides)["metrics"]
        rows.append(Scored(p.sigma_rel, float(scores[fd_key]), p.out, report))
    return rows, fd_key


def check_autoencoder_fits(template: Path, autoencoder: str | None, allowed_targets: tuple[str, ...]) -> None:
    """The run's model loaded as each evaluate.py loads its rebuild, so that autoencoder= given to a pixel run, or
    a latent run's autoencoder missing or with another hash, is one line before anything is written. Before, the
    first σ_rel was rebuilt and its record written first, which then refused the corrected command."""
    from ..checkpoint import load_model

    load_model(template, "cpu", allowed_targets, autoencoder=autoencoder)


def eval_config(overrides: Sequence[str]) -> Any:
    """evaluate.py's config with the sweep's overrides (mistyped keys named as evaluate.py names them)."""
    check_command_line(CONF_DIR, "eval", list(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("eval", overrides=list(overrides))


def fd_name(cfg: Any) -> str:
    """The key of the Fréchet distance the sweep's metrics report (fd_effl0, fid)."""
    from omegaconf import OmegaConf

    from ..metrics import Evaluator

    return Evaluator(**OmegaConf.to_container(cfg.metrics, resolve=True)).fd_key
