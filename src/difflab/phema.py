"""Post-hoc EMA (EDM2) after training, from the snapshots `callbacks=[default,phema]` keeps:

    python -m difflab.phema <run> sigma_rel=0.07                   # -> <run>/phema/sigma_rel_0.070_step_<N>.ckpt
    python -m difflab.phema <run> sigma_rel=0.07 out=my.ckpt step=2000
    python -m difflab.phema <run> sigma_rel=[0.03,0.05,0.08,0.12] n=1000 sampler.steps=20   # sweep, scored by FD

A list sweeps: each σ_rel is reconstructed and scored as evaluate.py scores a checkpoint (any evaluate.py
override applies), then a table is printed and the best named. The checkpoints load in sample.py, evaluate.py
and difflab.load.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import replace
from pathlib import Path

from .nearest_word import nearest_word
from .run.errors import USER_ERRORS, exit_if_stopped, one_line

OWN_KEYS = ("sigma_rel", "out", "step")
# Each σ_rel's checkpoint and report are written whole (and a sweep's record first): a stop keeps what was done.
STOPPED = (
    "each sigma_rel it had finished is kept (its checkpoint and scores are written whole): the same command "
    "continues the sweep"
)


def parse(argv: list[str]) -> tuple[str, dict[str, str], list[str]]:
    """(run folder, this command's own key=values, evaluate.py overrides) from the command line."""
    if not argv or "=" in argv[0] or argv[0].startswith("-"):
        raise ValueError(
            "usage: python -m difflab.phema <run folder> sigma_rel=<value or [list]> [out=…] [step=…]"
        )
    own, others = {}, []
    for arg in argv[1:]:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ValueError(f"{arg}: expected key=value (e.g. sigma_rel=0.05)")
        if key in OWN_KEYS:
            own[key] = value
        # Before, taken and not read: the sweep scored the rebuilds all the same.
        elif key.lstrip("+~") == "ckpt":
            raise ValueError(
                f"{arg}: a sweep scores the rebuilds of the run given first ({argv[0]}), not another checkpoint; "
                "drop ckpt="
            )
        else:
            check_not_a_typo(key)
            others.append(arg)
    if "sigma_rel" not in own:
        raise ValueError(
            "give sigma_rel=<value> (e.g. 0.05) or a list to sweep (e.g. sigma_rel=[0.03,0.05,0.1])"
        )
    return argv[0], own, others


def check_not_a_typo(key: str) -> None:
    """A key near one of this command's own (stepp=, sigma=) is taken for a typo of it, as train.py answers an
    unknown key: before, it was passed on as an evaluate.py override ("only a sweep scores …"). Dotted keys are
    evaluate.py's, and no top-level key of evaluate.py's config is near one of these."""
    name = key.lstrip("+~")
    close = None if "." in name else nearest_word(name, OWN_KEYS)
    if close is not None:
        raise ValueError(f"{name} is not a key of python -m difflab.phema; did you mean {close}?")


def moved_autoencoder(others: list[str]) -> tuple[str | None, list[str]]:
    """(the autoencoder= a single rebuild was given, a latent run's autoencoder moved from where the run recorded it;
    the other overrides): before, autoencoder= was refused there too ("only a sweep scores …"), so the rebuild of a
    latent run whose autoencoder moved could not be made to sample."""
    given = [arg for arg in others if arg.partition("=")[0].lstrip("+") == "autoencoder"]
    rest = [arg for arg in others if arg not in given]
    value = given[-1].partition("=")[2] if given else None
    if value == "":
        raise ValueError("autoencoder= is empty: give the moved autoencoder's checkpoint or run folder")
    return value, rest


def refuse_several_processes() -> None:
    """One process rebuilds and scores (each evaluate.py it runs may use several): before, two torchrun ranks
    raced to write the same file ("[Errno 17] File exists")."""
    import os

    if (
        os.environ.get("WORLD_SIZE", "1") not in ("", "1")
        or int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1
    ):
        raise ValueError("python -m difflab.phema runs as one process: start it without torchrun or srun")


def numbers(text: str) -> list[float]:
    """0.05 or [0.03,0.05] as floats; a one-line error for anything else."""
    items = text.strip().removeprefix("[").removesuffix("]").split(",")
    try:
        return [float(item) for item in items]
    except ValueError:
        raise ValueError(f"sigma_rel={text} is not a number or a list of numbers") from None


def main(argv: list[str] | None = None) -> int:
    """Rebuild one σ_rel, or sweep and score a list; 2 on a user error, 143 or 130 when stopped (SIGTERM,
    Ctrl-C)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    with exit_if_stopped("python -m difflab.phema", STOPPED):
        return rebuild_or_sweep(argv)


def rebuild_or_sweep(argv: list[str] | None) -> int:
    """main() within its stop handling."""
    try:
        refuse_several_processes()
        run, own, others = parse(sys.argv[1:] if argv is None else argv)
        from .run.phema import sweep  # torch loads once the arguments are read
        from .training.phema_reconstruct import plan, reconstruct
        from .training.phema_scores import table

        sigma_rels = numbers(own["sigma_rel"])
        if "step" in own and not own["step"].isdigit():
            raise ValueError(f"step={own['step']} is not a step number")
        step = int(own["step"]) if "step" in own else None
        if len(sigma_rels) == 1 and not own["sigma_rel"].strip().startswith("["):
            autoencoder, others = moved_autoencoder(others)
            if others:
                raise ValueError(
                    f"{others[0]}: only a sweep scores (sigma_rel=[…]); score one checkpoint with evaluate.py"
                )
            rebuild = plan(run, sigma_rels[0], own.get("out"), step)
            if autoencoder is not None:
                from .run.phema import check_autoencoder_fits

                # As a sweep checks it: one that is missing, has another hash, or is given for a pixel run is
                # refused before anything is written; one that fits is recorded in the rebuild.
                check_autoencoder_fits(rebuild.template, autoencoder, ())
                rebuild = replace(rebuild, autoencoder=str(Path(autoencoder).expanduser().resolve()))
            print(reconstruct(rebuild))
            return 0
        rows, fd_key = sweep(run, sigma_rels, others, own.get("out"), step)
    except USER_ERRORS as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    print(table(rows, fd_key))
    return 0


if __name__ == "__main__":
    sys.exit(main())
