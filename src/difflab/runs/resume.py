"""Resume a run, all of it (the run's own overrides: inherit.py): find its checkpoint (ckpt_path=last, a file, or by
itself when SLURM requeues the job), refuse one that contradicts or does not fit the config before anything is
written, and set aside what a rewound run wrote after it."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from ..checkpoint_config import check_contradictions, check_stored_config_types, contradictions, stored_value
from ..checkpoint_file import CONFIG_KEY, check_checksums, network_state, read_checkpoint, stored_step
from ..cluster.jobs import is_requeued_job
from ..data.folder import class_folder_changes
from ..io.diffusers_kinds import config_class
from ..io.set_aside import set_aside
from ..io.sharded_checkpoint import consolidated_name, is_sharded_checkpoint
from ..io.stored_checkpoint import folder_contents, not_a_checkpoint
from ..model_folder.read_diffusers_pipeline import is_diffusers_pipeline
from ..model_folder.safetensors_folder import FOLDER_CONFIG
from ..model_folder.state_fit import state_mismatch
from ..overrides import pasteable
from ..training.atomic_checkpoint_io import remove_unfinished_writes
from .inherit import OVERRIDES_FILE, latest_overrides_file

log = logging.getLogger("difflab")

LAST = Path("checkpoints") / "last.ckpt"

# What a checkpoint fixes: another value is another model, or (optim) one the restored optimizer state would
# silently override. Everything else (max_steps, loggers, callbacks, devices, batch size) may change.
FIXED_BY_CHECKPOINT = (
    "model",
    "schedule",
    "formulation",  # compared on its own values (below)
    "prediction_type",
    "data.dataset",
    "data.image_size",
    "data.channels",
    "optim",
)


# --- the checkpoint to resume from ----------------------------------------------------------------------------


def resume_path(ckpt_path: Any, run_dir: Path) -> Path | None:
    """The checkpoint a run starts from, or None for a fresh run.

    ckpt_path=last is <run_dir>/checkpoints/last.ckpt; any other value is a checkpoint (file or folder of shards). Either must exist.
    With no ckpt_path, a requeued SLURM job resumes from its own last.ckpt if it wrote one before it stopped (a
    damaged one is refused rather than trained over).
    """
    if ckpt_path is None or str(ckpt_path) == "":
        last = run_dir / LAST
        if not is_requeued_job() or not last.exists():
            return None
        if not is_checkpoint(last):  # damaged: starting afresh would train over the run's own folder
            raise FileNotFoundError(
                f"this requeued job cannot resume: {not_a_checkpoint(last)}; "
                "pass ckpt_path=<an earlier checkpoint of the run>"
            )
        return last
    if str(ckpt_path) == "last":
        path = run_dir / LAST
        if path.is_dir() and not is_checkpoint(path):
            raise FileNotFoundError(f"ckpt_path=last: {not_a_checkpoint(path)}")
        if not is_checkpoint(path):
            # Its periodic checkpoints, when last.ckpt alone is gone: before, advice to pass the folder just given.
            earlier = sorted(path.parent.glob("step_*.ckpt"))
            hint = (
                f"resume from one of its other checkpoints, e.g. ckpt_path={earlier[-1]}"
                if earlier
                else "pass hydra.run.dir=<the run folder to resume> or ckpt_path=<checkpoint file>"
            )
            raise FileNotFoundError(f"ckpt_path=last: no checkpoint at {path}; {hint}")
        return path
    path = Path(str(ckpt_path))
    if not is_checkpoint(path) and str(ckpt_path).lower() == "last":  # ckpt_path=Last, LAST
        raise FileNotFoundError(f"checkpoint not found: {ckpt_path}; did you mean ckpt_path=last?")
    if not is_checkpoint(path):
        raise FileNotFoundError(what_the_folder_is(path) if path.is_dir() else not_a_checkpoint(path))
    return path


def is_checkpoint(path: Path) -> bool:
    """A checkpoint file, or a folder of shards (trainer.strategy.state_dict_type=sharded)."""
    return path.is_file() or is_sharded_checkpoint(path)


def what_the_folder_is(folder: Path) -> str:
    """Why ckpt_path=<folder> cannot be resumed from, naming what the folder is: a run folder (and the two ways
    to go on from it), an exported model (weights only: difflab's or diffusers' folder), or a sharded checkpoint
    missing a file."""
    if is_checkpoint(folder / LAST):
        return (
            f"ckpt_path={folder} is a run folder: continue it with {pasteable('hydra.run.dir', folder)} ckpt_path=last, "
            f"or start a new run from it with {pasteable('ckpt_path', folder / LAST)}"
        )
    if is_checkpoint(folder / LAST.name) or any(folder.glob("step_*.ckpt")):  # <run>/checkpoints itself
        newest = (
            folder / LAST.name
            if is_checkpoint(folder / LAST.name)
            else sorted(folder.glob("step_*.ckpt"))[-1]
        )
        return (
            f"ckpt_path={folder} is a folder of checkpoints: give one of them ({pasteable('ckpt_path', newest)}), or "
            f"continue its run with {pasteable('hydra.run.dir', folder.parent)} ckpt_path=last"
        )
    if (folder / FOLDER_CONFIG).is_file() or is_diffusers_pipeline(folder):
        return (
            f"ckpt_path={folder} is an exported model folder (weights only): a run resumes from a training "
            "checkpoint (checkpoints/*.ckpt of its run folder)"
        )
    held = folder_contents(folder)
    if held and not any(folder.glob("*.ckpt")):  # before, "is not a whole sharded checkpoint"
        start = (
            f"; start a new run from its weights with {pasteable('init_from', folder)}"
            if config_class(folder / "config.json") == "UNet2DModel"
            else ""
        )
        return (
            f"ckpt_path={folder} is {held}, not a training checkpoint: a run resumes from one "
            f"(checkpoints/*.ckpt of its run folder){start}"
        )
    return str(not_a_checkpoint(folder))


def read_resumable(path: Path, allowed_targets: Iterable[str]) -> dict[str, Any]:
    """The checkpoint (tensors memory-mapped), refused in one line unless it holds what a resume restores.

    Its stored config may name the targets difflab allows and `allowed_targets` (those the config given now
    names itself: a user's own model class, which they compose and so trust).
    """
    try:
        check_checksums(path)
        ckpt = read_checkpoint(path, mmap=True, allowed_targets=allowed_targets)
    except ValueError as error:
        earlier = (
            sorted(p for p in path.parent.glob("step_*.ckpt") if p != path) if path.name == LAST.name else []
        )
        if not earlier or str(error).startswith("refused"):
            raise
        # A last.ckpt cut short (a full disk, a copy interrupted): the run's periodic checkpoints are still there.
        raise ValueError(
            f"{error}; resume from an earlier checkpoint of the run, e.g. ckpt_path={earlier[-1]}"
        ) from error
    missing = [key for key in ("global_step", "loops", "optimizer_states") if key not in ckpt]
    if missing:
        raise ValueError(
            f"checkpoint {path} cannot be resumed: it has no {', '.join(missing)} (weights only?)"
        )
    return ckpt


def check_resumable(
    fixed: Mapping[str, Any],
    build_net: Callable[[], torch.nn.Module],
    ckpt: dict[str, Any],
    path: Path,
    choices_now: Mapping[str, Any] | None = None,
) -> None:
    """Refuse, in one line, `fixed` values (FIXED_BY_CHECKPOINT, as configured now) that contradict the
    checkpoint, or weights that do not fit the configured network (`build_net`, called on the meta device).
    `choices_now`: the group options configured now, to name the checkpoint's own for one outside a run folder."""
    check_stored_config_types(ckpt[CONFIG_KEY], f"checkpoint {path}")
    check_contradictions(
        fixed, ckpt[CONFIG_KEY], path, _resume_hint(path, ckpt[CONFIG_KEY], choices_now or {})
    )
    with torch.device("meta"):  # shapes only: no memory, no initialisation
        net = build_net()
    for key in ("state_dict", "current_model_state"):  # the EMA weights and the raw ones beside them
        state = network_state(ckpt, key)
        problem = state is not None and state_mismatch(net.state_dict(), state)
        if problem:
            raise ValueError(f"checkpoint {path} does not fit the configured model ({key}): {problem}")


def check_ema_kept(ema_now: bool, ckpt: Mapping[str, Any], path: Path) -> None:
    """A checkpoint trained with EMA holds the average as its weights (state_dict) and the trained weights beside
    them (current_model_state), which the EMA callback swaps back on a resume. Resumed without that callback,
    training silently went on from the average instead."""
    if "current_model_state" in ckpt and not ema_now:
        raise ValueError(
            f"checkpoint {path} was trained with EMA: resumed without callbacks.ema, training would go on from the "
            "EMA weights instead of the trained ones; keep callbacks.ema on a resume (it may change its decay)"
        )


# The config groups whose options decide what a checkpoint holds (its data, network and noise levels).
FIXED_GROUPS = ("experiment", "data", "model", "formulation", "schedule")


def _resume_hint(path: Path, stored: Mapping[str, Any], choices_now: Mapping[str, Any]) -> str:
    """What to do about a contradiction: drop the overrides that made it; where none of its run's overrides were
    added (a checkpoint outside a run folder, a run folder whose overrides file was removed), give the
    checkpoint's own group options, which it records."""
    run_dir = path.parent.parent
    if latest_overrides_file(run_dir).is_file():
        return "resume with the checkpoint's settings (drop those overrides) or start a new run"
    if (run_dir / ".hydra").is_dir():
        why = f"{run_dir / OVERRIDES_FILE} is missing, so its run's overrides were not added"
    else:
        why = "this checkpoint lies outside a run folder, so its run's overrides were not added"
    own = stored.get("choices") or {}
    differ = [
        f"{group}={own[group]}"
        for group in FIXED_GROUPS
        if own.get(group) and choices_now.get(group) != own[group]
    ]
    wanted = f" ({' '.join(differ)})" if differ else ""
    return f"{why}: give its settings{wanted} on the command line, or start a new run"


def check_classes_kept(
    counted: int | None, folders: list[str] | None, data: str, stored: Mapping[str, Any], path: Path
) -> None:
    """The classes counted in the data now (`counted`; None when model.num_classes was given or the run has no
    labels) and its class folders (`folders`) against the checkpoint's: a class folder added, removed or renamed
    since is the data's change, not an override to drop, and is said so in one line. (Before, a renamed folder
    passed: the count was the same, and every later class silently took another label.)"""
    old = stored_value(stored, "model.num_classes")
    if counted is not None and old is not None and int(old) != int(counted):
        raise ValueError(
            f"{data} has {counted} classes now but checkpoint {path} was trained on {old}: a class was added or "
            "removed since; resume on the data it was trained on, or start a new run"
        )
    recorded = stored_value(stored, "data.class_folders")  # None in checkpoints older than the record
    changes = None if recorded is None or folders is None else class_folder_changes(recorded, folders)
    if changes is not None:
        raise ValueError(
            f"{data} has other class folders than checkpoint {path} was trained on ({changes}): its labels would "
            "now mean other classes; resume on the data it was trained on (rename the folders back), or start a "
            "new run"
        )


def check_steps_left(step: int, max_steps: int, path: Path) -> None:
    """Refuse a resume from past the step limit: Lightning would end at once, rc 0, having trained nothing. (At the
    limit itself it runs the final grid and FID again, which a job restarted after they failed relies on.)"""
    if 0 <= max_steps < step:
        raise ValueError(
            f"checkpoint {path} is at step {step}, past trainer.max_steps={max_steps}: nothing is left to train; "
            f"give trainer.max_steps above {step} to train on"
        )


def warn_if_at_the_step_limit(step: int, max_steps: int) -> None:
    """A resume from trainer.max_steps itself trains nothing (only the final grid and FID run again): before, it
    ended rc 0 with Lightning's "max_steps reached" as the only hint."""
    if step == max_steps:
        log.warning(
            "the checkpoint is at trainer.max_steps=%d: nothing is left to train, only the final sample grid and "
            "scores run again; give trainer.max_steps above %d to train on",
            max_steps,
            step,
        )


def warn_if_lr_schedule_changed(
    now: Mapping[str, Any] | None, stored: Mapping[str, Any], step: int, choice_now: str | None = None
) -> None:
    """A resume may change the LR schedule (its state is only the step count), but the learning rate then jumps
    at the resumed step without a word: a cosine whose total_steps follows trainer.max_steps is recomputed for the
    extended length, from about 0 back up to where the longer cosine is. `choice_now`: the lr_scheduler option
    configured now, to name both schedules as options (the checkpoint's is in its recorded choices)."""
    before = stored.get("lr_scheduler") or None  # lr_scheduler=none composes to an empty node
    now = now or None
    if before is None and now is None:
        return
    if before is None or now is None or before.get("_target_") != now.get("_target_"):
        # Options as the user types them (warmup), not the function behind one (linear_warmup).
        choice_before = (stored.get("choices") or {}).get("lr_scheduler")
        if choice_now and choice_before and choice_now != choice_before:
            names = choice_now, choice_before
        else:
            names = _schedule_name(now), _schedule_name(before)
        found = [f"lr_scheduler={names[0]} (checkpoint: {names[1]})"]
    else:
        found = contradictions({"lr_scheduler": dict(now)}, stored)
    if found:
        log.warning(
            "the learning-rate schedule differs from the checkpoint's: %s; from step %d the learning rate follows "
            "the new schedule (it may jump there)",
            ", ".join(found),
            step,
        )


# What decides which images a run trains on and holds out: free to change on resume (a dataset moved to another
# mount), but never without a word, since the steps from the resume on then see other images.
DATA_SOURCE = ("data.root", "data.val_fraction", "data.split_seed", "data.held_out_by")


def warn_if_data_changed(now: Mapping[str, Any], stored: Mapping[str, Any], step: int) -> None:
    """Name the DATA_SOURCE values (`now`: dotted key -> the resolved value configured now) the checkpoint was
    trained with otherwise. Before, a resume with another data.root trained on another folder without a word."""
    given = {key: value for key, value in now.items() if value is not None}
    stored_root = stored_value(stored, "data.root")
    # The same folder however it is written: a root recorded as typed (before roots were recorded as found), or
    # given now through another path (/work/main/../shared/data for /work/shared/data).
    root_now = given.get("data.root")
    if isinstance(stored_root, str) and isinstance(root_now, str) and _same_folder(root_now, stored_root):
        del given["data.root"]
    found = contradictions(given, stored)
    held_out_by = stored_value(stored, "data.held_out_by")
    if any(item.startswith("data.held_out_by=") for item in found):  # the same files, split otherwise
        log.warning(
            "the training data differs from the checkpoint's: %s; from step %d the run would validate on images it "
            "trained on: add data.held_out_by=%s to keep the checkpoint's held-out images",
            ", ".join(found),
            step,
            held_out_by,
        )
    elif found:
        log.warning(
            "the training data differs from the checkpoint's: %s; from step %d the run trains on the images this "
            "gives (nothing to do if the same dataset moved)",
            ", ".join(found),
            step,
        )


def _same_folder(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


# What a conditional run is trained with beside its data, by data.condition: the share of samples trained without
# their condition (what guidance relies on), and the text the net reads. Super-resolution never drops its input.
CONDITIONING_RECIPE = {
    "labels": ("cond_drop_prob",),
    "text": ("cond_drop_prob", "data.captions", "data.max_tokens"),
    # the low resolution its input is made at, and the noise on it (SR3's conditioning augmentation)
    "superres": ("data.sr_factor", "data.sr_noise"),
}


def check_sharded_resumed_by_fsdp(path: Path, strategy: Any) -> None:
    """A sharded checkpoint (a folder of per-rank shards) resumes under trainer=fsdp only: another strategy's
    checkpoint reader opens it as a file (before: IsADirectoryError once the processes had started, the new run
    folder left claimed). Put together into one file, any strategy resumes it."""
    if not is_sharded_checkpoint(path):
        return
    target = str(strategy.get("_target_", "")) if isinstance(strategy, Mapping) else ""
    if target.endswith("ShardedStrategy"):
        return
    raise ValueError(
        f"checkpoint {path} is sharded (a folder of per-rank shards), which only trainer=fsdp resumes: resume with "
        f"trainer=fsdp, or put it together first (python -m difflab.consolidate {path}) and resume from "
        f"{consolidated_name(path)}"
    )


def check_task_kept(task_now: Any, stored: Mapping[str, Any], path: Path) -> None:
    """An autoencoder checkpoint resumed by a diffusion recipe, or the other way round: one line saying what the
    checkpoint is and how it is used, not a list of the two configs' differences."""
    trained = stored.get("task")
    if (trained == "autoencoder") == (task_now == "autoencoder"):
        return
    if trained == "autoencoder":
        raise ValueError(
            f"checkpoint {path} is an autoencoder (task=autoencoder), not a diffusion model: resume it with its "
            f"own model=autoencoder_kl_… recipe, or give autoencoder={path} to train a diffusion model on its latents"
        )
    raise ValueError(
        f"checkpoint {path} is a diffusion model, not an autoencoder: resume it with its own recipe, or drop "
        "ckpt_path= to train an autoencoder from scratch"
    )


def check_discriminator_kept(now: Mapping[str, Any], stored: Mapping[str, Any], path: Path) -> None:
    """An autoencoder run resumed with its discriminator switched on or off, or with another number of layers:
    one line before anything is written (before, Lightning's missing or unexpected "discriminator.*" keys once
    the run had begun). `now`: autoencoder_module as configured; its disc_weight may change."""
    if stored.get("task") != "autoencoder":
        return
    before = stored.get("autoencoder_module") or {}
    weight_before, weight_now = float(before.get("disc_weight") or 0), float(now.get("disc_weight") or 0)
    if weight_before > 0 and weight_now <= 0:
        raise ValueError(
            f"checkpoint {path} was trained with a discriminator (autoencoder_module.disc_weight={weight_before:g}): "
            "resumed without it, its weights and optimizer state would have nowhere to go; keep "
            "autoencoder_module.disc_weight above 0 on a resume (its value may change)"
        )
    if weight_before <= 0 and weight_now > 0:
        raise ValueError(
            f"checkpoint {path} was trained without a discriminator (autoencoder_module.disc_weight=0): a resume "
            "cannot add one, the checkpoint holds no weights or optimizer state for it; start a new run with "
            f"autoencoder_module.disc_weight={weight_now:g}"
        )
    layers_before, layers_now = before.get("disc_layers"), now.get("disc_layers")
    if weight_now > 0 and layers_before is not None and layers_now != layers_before:
        raise ValueError(
            f"autoencoder_module.disc_layers={layers_now} (checkpoint: {layers_before}): the discriminator was "
            f"built with {layers_before} layers, which the checkpoint {path} fixes; keep disc_layers={layers_before} "
            "on a resume"
        )


def check_condition_kept(typed: Iterable[str], stored: Mapping[str, Any], path: Path) -> None:
    """A data.condition typed on a resume must be the checkpoint's: its network was built for that conditioning,
    which a resume keeps. Before, data.condition=null on a text run was dropped without a word (the net's text_dim
    made it text again), recorded, and replayed by later resumes, which then refused text settings as not a text
    run's."""
    from .inherit import override_key, parse

    given = [o for o in typed if override_key(o) == "data.condition"]
    if not given:
        return
    asked, trained = parse(given[-1]).value(), stored_value(stored, "data.condition")
    if asked != trained:
        raise ValueError(
            f"data.condition={asked if asked is not None else 'null'} but checkpoint {path} was trained with "
            f"data.condition={trained if trained is not None else 'null'}: a resume keeps its conditioning; drop "
            "data.condition= (or start a new run)"
        )


def warn_if_conditioning_changed(now: Mapping[str, Any], stored: Mapping[str, Any], step: int) -> None:
    """Name the CONDITIONING_RECIPE values (`now`: dotted key -> the resolved value configured now) the checkpoint
    was trained with otherwise. Before, a resume changed them without a word."""
    keys = CONDITIONING_RECIPE.get(stored_value(stored, "data.condition"), ())
    found = contradictions({key: now[key] for key in keys if now.get(key) is not None}, stored)
    if found:
        log.warning(
            "the conditioning differs from the checkpoint's: %s; from step %d the run trains with these values",
            ", ".join(found),
            step,
        )


def warn_if_seed_changed(now: int, stored: Mapping[str, Any], step: int) -> None:
    """The seed decides every step's noise levels, noise and batch order (training/step_seeding.py): a resume
    with another seed is a different continuation, no longer the one its run would have trained."""
    found = contradictions({"seed": now}, stored)
    if found:
        log.warning(
            "the seed differs from the checkpoint's: %s; from step %d the run draws other noise and batches than "
            "the run it resumes (an exact continuation keeps the checkpoint's seed)",
            ", ".join(found),
            step,
        )


def _schedule_name(node: Mapping[str, Any] | None) -> str:
    return "none" if node is None else str(node.get("_target_", "?")).rsplit(".", 1)[-1]


def set_aside_later_checkpoints(resume: Path, step: int) -> Path | None:
    """Resuming from an earlier checkpoint of a run rewinds it: what its folder holds from after `step` (and a
    last.ckpt other than `resume`) belongs to the abandoned continuation. It moves, untouched, into
    checkpoints/superseded_at_step_<step>/, so the resumed run writes its checkpoints under their own names:
    Lightning would add step_…-v1.ckpt and last-v1.ckpt beside them, and the next ckpt_path=last would then
    pick the stale last.ckpt. Returns the folder they went to (None when nothing was later)."""
    folder = resume.parent
    later = [
        p
        for p in sorted(folder.glob("*.ckpt"))
        if p.resolve() != resume.resolve() and (p.name == LAST.name or (stored_step(p) or -1) > step)
    ]
    return set_aside(later, folder, step)


def set_aside_later_grids(samples: Path, step: int, rewound: bool) -> Path | None:
    """The sample grids of an abandoned continuation (step_<n>.png after `step`; final.png too when the run is
    `rewound`, its final grid then being of a later step) move into samples/superseded_at_step_<step>/, as its
    checkpoints do: the resumed run would draw over them at the same steps."""
    if not samples.is_dir():
        return None
    later = [p for p in sorted(samples.glob("step_*.png")) if _grid_step(p) > step]
    if rewound and (samples / "final.png").is_file():
        later.append(samples / "final.png")
    return set_aside(later, samples, step)


def _grid_step(path: Path) -> int:
    digits = path.stem.removeprefix("step_")
    return int(digits) if digits.isdigit() else -1


def tidy_before_fit(run_dir: Path, resume: Path | None, step: int, rank_zero: bool) -> None:
    """Just before fit: Lightning's resume warnings that do not apply here silenced; on rank 0 what a killed
    checkpoint write left removed, and a rewound run's later checkpoints set aside (set_aside_later_checkpoints)."""
    if resume is not None:
        if rank_zero:
            log.info("resuming from %s at step %d", resume, step)
        # Lightning asks for a dataloader with state_dict/load_state_dict to resume mid-epoch. Ours needs none:
        # its sampler starts at the batch the restored global step points to (tests/test_resume.py checks
        # that the resumed run matches an uninterrupted one exactly). Its own checkpoint folder is not empty.
        warnings.filterwarnings(
            "ignore", message="You're resuming from a checkpoint that ended before the epoch"
        )
        warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    if not rank_zero:
        return
    for temp in remove_unfinished_writes(run_dir / "checkpoints"):
        log.warning("removed %s, left by a checkpoint write that was killed mid-way", temp)
    if resume is not None and resume.resolve().parent == (run_dir / "checkpoints").resolve():
        aside = set_aside_later_checkpoints(resume, step)
        if aside is not None:
            log.warning("resuming from step %d: the checkpoints written after it moved to %s", step, aside)
        grids = set_aside_later_grids(run_dir / "samples", step, rewound=aside is not None)
        if grids is not None:
            log.warning("resuming from step %d: the sample grids drawn after it moved to %s", step, grids)
