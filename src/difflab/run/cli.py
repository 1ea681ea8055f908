"""What every entry script runs before Hydra: the command line read as Hydra reads it, a mistyped key or option
named with the nearest valid one, a resume's own overrides added (train.py), then Hydra runs the task.

Imports Hydra and OmegaConf only (torch, Lightning and the feature networks load once a run starts), so
`--help`, a typo and a bad value are answered in about a second.
"""

from __future__ import annotations

import faulthandler
import inspect
import itertools
import logging
import math
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.types import Glob, Override, OverrideType
from omegaconf import OmegaConf

from ..checkpoint_config import stored_value
from ..cluster.jobs import is_secondary_rank, srun_step
from ..cluster.stop_signal import StoppedBySignal, stop_signal_raises
from ..cluster.torchrun import earlier_attempts_folder, shared_run_folder, started_together
from ..compat import run_hydra
from ..console_log import own_warnings_plain, said_before_the_log
from ..nearest_word import nearest_word
from ..overrides import pasteable
from ..runs.inherit import inherited_overrides, parse
from .errors import work_began
from .sweep_stopped import jobs_not_run, submits_jobs, sweep_began
from .unknown_key import NOT_READ, dotted_keys, nearest_key, options_composed, unknown_key_hint

# Flags after which the command line holds something else than overrides (a value of the flag).
PLAIN_FLAGS = ("-m", "--multirun")
# How a process stopped by a signal exits: training's own stop (Preempted: 3, 130 after Ctrl-C) or a stop outside it
# (StoppedBySignal: 128 + SIGHUP or SIGTERM).
STOP_EXIT_CODES = (3, 129, 130, 143)
# The configs where a key added with + can be read: train.py's config is instantiated and interpolated
# (+trainer.profiler=simple, +callbacks.<name>=…, a tag for an interpolation); the others read their keys by name.
ADDS_KEYS = ("train",)
PROMPT_KEYS = ("prompt", "negative_prompt")  # texts, which Hydra may read as numbers


def launch(task: Callable[[Any], Any], config_name: str, conf_dir: Path, inherit: bool = False) -> None:
    """Check sys.argv, add a resume's own overrides when `inherit`, and run `task` under Hydra."""
    # A crash inside a native library (a collective, a kernel) prints every thread's Python stack instead of
    # a silent exit -11: on a cluster, the crashed rank's log says where it was.
    faulthandler.enable()
    own_warnings_plain()  # difflab's warnings as one line of their own, not Python's source line and code
    args = sys.argv[1:]
    # Each DDP process Lightning starts reruns this command: what it says, rank 0 alone says once.
    say = (lambda line: None) if is_secondary_rank() else said_before_the_log
    try:
        inherited = inherited_overrides(args, conf_dir, say) if inherit else []
        # With the run's own overrides first: a key its experiment adds (callbacks.fid) is a key of this run.
        check_command_line(conf_dir, config_name, with_inherited(args, inherited))
    except ValueError as error:  # nothing has run, nothing is written
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    if inherited:
        say(f"resuming with the run's own overrides: {' '.join(inherited)}")
    if inherit:
        args = with_this_ranks_run_folder(args)
    try:
        # SIGTERM or SIGHUP before the run's own handling begins (a job cancelled in its first seconds): before,
        # the process ended with no word. A handler already set (submitit's) stays.
        with stop_signal_raises(unless_handled=True, signals=(signal.SIGTERM, signal.SIGHUP)):
            run_hydra(task, str(conf_dir), config_name, with_inherited(args, inherited))
    except SystemExit as end:
        # A job's stop (its line said) ends the sweep that runs its jobs here; a refusal or the sweep's end is not
        # one (every job would fail alike).
        if end.code in STOP_EXIT_CODES:
            say_jobs_not_run()
        raise
    except (KeyboardInterrupt, StoppedBySignal) as stop:
        # Ctrl-C, SIGTERM or SIGHUP outside the work's own stop handling (Hydra composing, the checks, torch
        # loading; a sweep between its jobs or waiting on a cluster's): one line, not a traceback through the
        # import machinery or no word at all.
        how = str(stop) if isinstance(stop, StoppedBySignal) else "interrupted (Ctrl-C)"
        print(f"error: {Path(sys.argv[0]).name} {how} {_when_stopped()}", file=sys.stderr)
        say_jobs_not_run()
        # A library whose import the stop cut short logs at exit through Hydra's handlers (torch's FakeTensor
        # cache stats, three INFO lines after this one).
        logging.disable(logging.INFO)
        sys.exit(stop.exit_code if isinstance(stop, StoppedBySignal) else 130)


def say_jobs_not_run() -> None:
    """The jobs of a sweep run here that a stop left unstarted, in one line (none outside such a sweep)."""
    if (left := jobs_not_run()) is not None:
        print(f"error: {left}", file=sys.stderr)


def _when_stopped() -> str:
    """When a stop came that the work's own handling did not see, and what it leaves."""
    if submits_jobs():
        # Jobs a cluster launcher submitted go on there: before, this said only that ended jobs keep their results.
        return (
            "while submitting or waiting on its jobs; those submitted go on in the cluster's queue (scancel stops "
            "them)"
        )
    if sweep_began():
        return "while running a sweep; the jobs that ended keep their results"
    if work_began():  # its end, after the work's own handling
        return "after its work; what it had finished is kept"
    return "while starting; its work had not begun"


def with_inherited(args: list[str], inherited: list[str]) -> list[str]:
    """The command line with a resume's own overrides just before the first override typed, after any Hydra flag:
    before, `--cfg job ckpt_path=last` put them ahead of the flag, and argparse refused the overrides after it."""
    first = next(
        (i for i, a in enumerate(args) if not a.startswith("-") and ("=" in a or a[:1] == "~")), len(args)
    )
    return [*args[:first], *inherited, *args[first:]]


def with_this_ranks_run_folder(args: list[str]) -> list[str]:
    """train.py's overrides with the run folder where the launcher decides it: torchrun's other ranks join the one
    its rank 0 claimed, a job torchrun restarted goes back into its own, and every task of an srun step (and the
    step again once SLURM requeues the job) takes outputs/train/slurm/<job id>_<step>."""
    if started_together() and is_secondary_rank():
        return joining_rank_zeros_folder(args)
    if folder := earlier_attempts_folder():
        print(f"torchrun restarted the job: back into its run folder {folder}")
        return [*_without_run_folder(args), f"hydra.run.dir={folder}"]
    step = srun_step()
    if step is None or any(a in PLAIN_FLAGS for a in args):
        return args  # not srun, or a sweep (Hydra's sweep folders)
    named = _without_run_folder(args) != args  # the user's folder, else the step's
    folder = [] if named else [f"hydra.run.dir=${{paths.root_dir}}/outputs/${{task_name}}/slurm/{step}"]
    return [
        *args,
        *folder,
        *(["hydra.output_subdir=null"] if is_secondary_rank() else []),
    ]  # rank 0 writes it


def joining_rank_zeros_folder(args: list[str]) -> list[str]:
    """The overrides of a train.py rank other than 0 under torchrun: the run folder rank 0 claimed, without
    writing .hydra/ into it (rank 0 does)."""
    kept = [a for a in _without_run_folder(args) if not a.lstrip("+").startswith("hydra.output_subdir=")]
    return [*kept, f"hydra.run.dir={shared_run_folder()}", "hydra.output_subdir=null"]


def _without_run_folder(args: list[str]) -> list[str]:
    return [a for a in args if not a.lstrip("+").startswith("hydra.run.dir=")]


# Hydra's commands, of which a command line gives one, by each of their flags.
COMMAND_FLAGS = {
    "-r": "--run",
    "--run": "--run",
    "-m": "-m",
    "--multirun": "-m",
    "-c": "--cfg",
    "--cfg": "--cfg",
    "-i": "--info",
    "--info": "--info",
    "-sc": "--shell-completion",
    "--shell-completion": "--shell-completion",
}


# Hydra's flags that keep the config composed (they show it, or say how it runs): the overrides beside them are
# checked, as without them. Before, `--help optim.lrr=1` was a traceback and `--cfg job data=digit` Hydra's error.
SHOWING_FLAGS = ("-h", "--help", "--hydra-help", "--resolve", "-r", "--run", *PLAIN_FLAGS)
SHOWING_FLAGS_WITH_A_VALUE = ("-c", "--cfg", "-p", "--package")
INFO_FLAGS = ("-i", "--info")
INFO_CHOICES = ("all", "config", "defaults", "defaults-tree", "plugins", "searchpath")


def _overrides_beside_flags(args: list[str]) -> list[str] | None:
    """The overrides of a command line, without the flags that show the config (and their values); None where a
    flag changes which config is composed (-cn, -cp) or asks for something else (--version)."""
    overrides: list[str] = []
    skip = False
    for arg, after in zip(args, [*args[1:], None], strict=True):
        if skip:  # a flag's value, read with the flag
            skip = False
            continue
        flag = arg.split("=", 1)[0]
        if not arg.startswith("-"):
            overrides.append(arg)
        elif flag in SHOWING_FLAGS_WITH_A_VALUE:
            skip = "=" not in arg  # its value: job, hydra, all, or a package
        elif flag in INFO_FLAGS:
            # --info takes a value only from its choices, never a flag (review: --info --help was refused)
            skip = "=" not in arg and after in INFO_CHOICES
        elif arg not in SHOWING_FLAGS:
            return None
    return overrides


def _refuse_two_commands(args: list[str]) -> None:
    """`-m … --cfg job`: before, Hydra's traceback ("Only one of --run, --multirun, --cfg, --info and
    --shell_completion can be specified")."""
    given = list(
        dict.fromkeys(COMMAND_FLAGS[a.split("=", 1)[0]] for a in args if a.split("=", 1)[0] in COMMAND_FLAGS)
    )
    if len(given) < 2:
        return
    hint = (
        "; to see a sweep job's config, drop -m and give one value of each swept key"
        if "-m" in given and "--cfg" in given
        else ""
    )
    raise ValueError(
        f"{given[0]} and {given[1]} cannot be given together (each is a command of its own): drop one{hint}"
    )


def check_command_line(conf_dir: Path, config_name: str, args: list[str]) -> None:
    """A one-line error for an option a config group does not have or a key the config does not have, naming
    the nearest valid one ("did you mean optim.lr?"). Anything this check cannot judge is left to Hydra."""
    _refuse_two_commands(args)
    typed = _overrides_beside_flags(args)
    if typed is None:
        return  # -cn <name>, --version, …: another config or none, Hydra's own business
    overrides = []
    for arg in typed:
        try:
            overrides.append(parse(arg))
        except ValueError as error:  # before, Hydra's lexer error, its caret line and its footer
            key, _, value = arg.partition("=")
            raise ValueError(
                f"{error}; to give the value as it is, quote it (the shell keeps the inner quotes): "
                f"{_quoted_for_the_shell(key, value)}"
            ) from None
    if any(a in PLAIN_FLAGS for a in args):
        _refuse_run_folder_in_a_sweep(overrides)
    else:
        _refuse_a_sweep_without_multirun(overrides)
    _refuse_adding_a_listed_group(conf_dir, config_name, overrides)
    _refuse_prompts_read_as_other_numbers(overrides)
    groups = [o for o in overrides if _is_group(conf_dir, o)]
    for override in groups:
        _check_options(conf_dir, override)
    fixed = [o.input_line for o in groups if not o.is_sweep_override()]
    # A sweep over options (-m model=dit_tiny,unet_small) runs each: a key that one of them lacks stops the sweep
    # at that job (before: Hydra's six-line error there, after the jobs before it had run).
    for chosen in _each_sweep_choice(conf_dir, [o for o in groups if o.is_sweep_override()]):
        job = f" with {' '.join(chosen)} (a job of this sweep)" if chosen else ""
        _check_keys(conf_dir, config_name, overrides, groups, [*fixed, *chosen], job)
    if config_name in ADDS_KEYS and any(o.key_or_group.startswith(SEARCH_KEYS) for o in overrides):
        _check_search_space(conf_dir, config_name, overrides)


def _check_keys(
    conf_dir: Path,
    config_name: str,
    overrides: list[Override],
    groups: list[Override],
    composed_with: list[str],
    job: str,
) -> None:
    """The key overrides against the config composed with the group choices `composed_with`; `job` says which
    sweep job that is (or "")."""
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=composed_with, return_hydra_config=True)
    except Exception:
        _check_groups_exist(conf_dir, config_name, groups)
        return  # a composition Hydra refuses with its own message
    selected = _selected_options(conf_dir, cfg, [o for o in groups if not o.is_sweep_override()])
    config = OmegaConf.to_container(cfg, resolve=False)
    hydra_config = config.pop("hydra")  # Hydra's own settings: only the launcher's are checked (below)
    keys = set(dotted_keys(config))
    new_keys_read = config_name in ADDS_KEYS
    launcher = str(cfg.hydra.runtime.choices.get("hydra/launcher"))
    for override in overrides:
        key = override.key_or_group
        if override in groups:
            continue
        if key.split(".")[0] == "hydra":
            _check_launcher_key(conf_dir, config_name, override, hydra_config.get("launcher") or {}, launcher)
            continue
        if override.type == OverrideType.ADD and not new_keys_read and "." not in key and key not in keys:
            hint = unknown_key_hint(conf_dir, key, keys, override.input_line, selected, new_keys_read)
            hint = "" if hint == NOT_READ else f"; {hint}"
            raise ValueError(f"{override.input_line}: the {config_name} config{job} reads no key {key}{hint}")
        if override.type == OverrideType.DEL:
            _refuse_deleting_what_is_read(override, config, config_name)
        if override.type != OverrideType.CHANGE:
            continue
        if key not in keys and not any(k.startswith(f"{key}.") for k in keys):
            hint = unknown_key_hint(conf_dir, key, keys, override.input_line, selected, new_keys_read)
            raise ValueError(f"{key} is not a key of the {config_name} config{job}; {hint}")


def _check_launcher_key(
    conf_dir: Path, config_name: str, override: Override, launcher: dict[str, Any], chosen: str
) -> None:
    """hydra.launcher.<key> that the chosen launcher lacks: the launcher that has it (partition: hydra/launcher=slurm),
    else the nearest key. Before, Hydra's "Key 'partition' not in 'BasicLauncherConf'", and for a typo
    (partiton) its advice to add the key with +, which submitit then refuses."""
    key = override.key_or_group
    if not key.startswith("hydra.launcher.") or override.type == OverrideType.DEL:
        return
    keys = {"hydra.launcher", *(f"hydra.launcher.{k}" for k in dotted_keys(launcher))}
    parent, _, last = key.rpartition(".")
    if key in keys or (
        last.isdigit() and isinstance(stored_value(launcher, parent[len("hydra.launcher.") :]), list)
    ):
        return  # hydra.launcher.srun_args.0=…: an item of a list the launcher has
    launchers = _launchers_with(conf_dir, config_name, key)
    if launchers and chosen not in launchers:
        choices = " or ".join(f"hydra/launcher={name}" for name in launchers)
        raise ValueError(f"{key} is not a key of the {chosen} launcher; {choices} has it: add {choices}")
    if override.type in (OverrideType.ADD, OverrideType.FORCE_ADD):
        return  # a new key of the launcher (+ or ++): Hydra's business
    close = nearest_key(key, keys)
    hint = f"did you mean {close}?" if close else f"add it with +{override.input_line} if it is new"
    raise ValueError(f"{key} is not a key of the {chosen} launcher (hydra/launcher={chosen}); {hint}")


def _launchers_with(conf_dir: Path, config_name: str, key: str) -> list[str]:
    """The hydra/launcher options whose launcher has `key`: this project's own (conf/hydra/launcher) where one has
    it, else Hydra's plugins'."""
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        options = GlobalHydra.instance().config_loader().get_group_options("hydra/launcher")
        having = []
        for option in options:
            try:
                cfg = compose(config_name, overrides=[f"hydra/launcher={option}"], return_hydra_config=True)
            except Exception:  # a plugin option that cannot be composed here has nothing to offer
                continue
            if _has_key(cfg, key):
                having.append(option)
    own = [name for name in having if (conf_dir / "hydra" / "launcher" / f"{name}.yaml").is_file()]
    return own or having


def _has_key(cfg: Any, key: str) -> bool:
    """Whether the dotted `key` is in `cfg`, also where its value is ??? or null."""
    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, throw_on_missing=False)
    return OmegaConf.is_dict(node) and name in list(node)  # `name in node` is False for a ??? value


def _check_search_space(conf_dir: Path, config_name: str, overrides: list[Override]) -> None:
    """An Optuna search's space (hydra.sweeper.params), each entry checked as the override a trial makes of it.
    Before, a typo (schedule: choice(linear, cosnie)) ended the search at the first trial that drew it, in
    Hydra's words, after the trials before it had trained."""
    fixed = [o.input_line for o in overrides if not o.is_sweep_override()]
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name, overrides=fixed, return_hydra_config=True)
    except Exception:
        return  # a composition Hydra refuses with its own message
    params = OmegaConf.select(cfg, "hydra.sweeper.params")
    if not params:
        return
    groups = [o for o in overrides if _is_group(conf_dir, o) and not o.is_sweep_override()]
    selected = _selected_options(conf_dir, cfg, groups)
    config = OmegaConf.to_container(cfg, resolve=False)
    config.pop("hydra")
    keys = set(dotted_keys(config))
    for key, value in params.items():
        line = f"{key}={value}"
        try:
            override = parse(line)
        except ValueError:
            continue  # the sweeper's own grammar: its message
        try:
            if _is_group(conf_dir, override):
                _check_options(conf_dir, override)
            elif _a_key_the_config_lacks(override, keys):
                hint = unknown_key_hint(conf_dir, str(key), keys, line, selected, False)
                raise ValueError(f"{key} is not a key of the {config_name} config; {hint}")
        except ValueError as error:
            raise ValueError(f"the search space (hydra.sweeper.params) holds {key}: {error}") from None


def _a_key_the_config_lacks(override: Override, keys: set[str]) -> bool:
    """Whether a change of a key (not hydra.*) names one the config has neither as a value nor as a node."""
    key = override.key_or_group
    if override.type != OverrideType.CHANGE or key.split(".")[0] == "hydra":
        return False
    return key not in keys and not any(k.startswith(f"{key}.") for k in keys)


# What starts or changes an Optuna search (its space is checked before its trials).
SEARCH_KEYS = ("hparams_search", "hydra.sweeper.params", "hydra/sweeper")

# The most option combinations of a sweep composed one by one (each is a composition, ~0.1 s).
CHECKED_SWEEP_JOBS = 64


def _each_sweep_choice(conf_dir: Path, sweeps: list[Override]) -> list[list[str]]:
    """The group choices of each job of a sweep over options ([[]] for none), as group=option overrides. Where
    there are too many jobs to compose each, every option once (the other swept groups at their first option);
    where a sweep's options cannot be listed here, the groups as configured ([[]], the check before sweeps)."""
    try:
        listed = [[f"{o.key_or_group}={v}" for v in _swept_options(conf_dir, o)] for o in sweeps]
    except Exception:  # left to Hydra
        return [[]]
    if math.prod(len(options) for options in listed) <= CHECKED_SWEEP_JOBS:
        return [list(c) for c in itertools.product(*listed)]
    firsts = [options[0] for options in listed]
    return [[*firsts[:i], option, *firsts[i + 1 :]] for i, options in enumerate(listed) for option in options]


def _swept_options(conf_dir: Path, sweep: Override) -> list[str]:
    value = sweep.value()
    if isinstance(value, Glob):
        return value.filter(_options(conf_dir, sweep.key_or_group))
    # A list of options is one job's choice (callbacks=[default,fid],default), written back as Hydra reads it.
    return [f"[{','.join(map(str, v))}]" if isinstance(v, list) else str(v) for v in value.list]


# What a run does without: a callback or logger (~callbacks.sample_grid), or all of them, and the LR schedule.
DELETABLE = ("callbacks", "logger", "lr_scheduler", "tags")


def _refuse_deleting_what_is_read(override: Override, config: dict[str, Any], config_name: str) -> None:
    """~key of a value or group the run reads: before, a traceback (ConfigAttributeError: Key 'seed' is not in
    struct), or, for ~optim.lr, training on the library's own default without a word. A key the config does not
    have is left to Hydra's own message."""
    key = override.key_or_group
    if key.split(".")[0] in DELETABLE or key.split(".")[0] == "hydra":
        return
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return
        node = node[part]
    if "." not in key and isinstance(node, dict):
        raise ValueError(
            f"~{key} deletes the {key} group, which the {config_name} config reads: pick another option "
            f"({key}=<option>) instead"
        )
    if isinstance(node, dict) or _not_an_argument(config, key):
        return  # a leftover a recipe set for another option: its remedy (declared_types.check_known_keys) is this deletion
    raise ValueError(
        f"~{key} deletes a setting the {config_name} config reads (what then takes its place is unseen): set "
        f"it instead, {key}=<value>"
    )


def _not_an_argument(config: dict[str, Any], key: str) -> bool:
    """Whether `key` (group.name) is no argument of the class its group builds (None: the group builds none)."""
    parent, _, name = key.rpartition(".")
    node: Any = config
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, dict) else None
    target = node.get("_target_") if isinstance(node, dict) else None
    if not target:
        return False
    try:
        from hydra.utils import get_method

        parameters = inspect.signature(get_method(str(target))).parameters
    except Exception:  # a target that cannot be read here is left to the run's own checks
        return True
    takes_any = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return name not in parameters and not takes_any


def _refuse_a_sweep_without_multirun(overrides: list[Override]) -> None:
    """A comma (or range, choice(…)) makes several values, a sweep, which only -m runs: before, Hydra's
    "Ambiguous value" and its numbered advice (a prompt with a comma, say, which is meant as one text)."""
    for override in overrides:
        if override.is_sweep_override() and override.key_or_group.split(".")[0] != "hydra":
            key, _, value = override.input_line.partition("=")
            raise ValueError(
                f"{override.input_line} is several values, a sweep, which needs -m (a list is {key}=[…]); to give "
                f"it as one text, quote it (the shell keeps the inner quotes): {_quoted_for_the_shell(key, value)}"
            )


def _quoted_for_the_shell(key: str, value: str) -> str:
    """`key=value` to paste into a shell, which hands Hydra the value quoted as one text: "key='value'" reads best,
    but the shell would expand a $ or a backquote in it (or end at a quote), so such a value is quoted as
    pasteable does, in single quotes the shell leaves alone."""
    if any(c in value for c in "$`\"\\!'"):
        return pasteable(key, value)
    return f"\"{key}='{value}'\""


def _refuse_prompts_read_as_other_numbers(overrides: list[Override]) -> None:
    """prompt=1_000 or prompt=+5: Hydra reads the whole numbers 1000 and 5, and the text typed is gone, so another
    prompt than the one typed would be embedded and recorded. prompt=1e3 or 0.50: a float, refused where the prompt
    is read, but only here is the word typed known (before, the line named 1000.0 and 0.5)."""
    for override in overrides:
        key = override.key_or_group.lstrip("+")
        if key not in PROMPT_KEYS or override.is_sweep_override() or override.is_delete():
            continue
        typed = override.input_line.partition("=")[2].strip()
        value = override.value()
        items = value if isinstance(value, list) else [value]
        words = [w.strip() for w in typed.strip("[]").split(",")] if isinstance(value, list) else [typed]
        for position, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, int | float):
                continue
            # The word typed in the item's own place (review: "[1e3 cats,1e3]" had its first 1e3 quoted); where
            # the words do not line up with the items, the first word that reads as this number.
            aligned = len(words) == len(items)
            word = (
                words[position] if aligned else next((w for w in words if _same_number(w, item)), str(item))
            )
            if isinstance(item, int) and word == str(item):
                continue
            if aligned and isinstance(value, list):
                quoted = "[" + ",".join(f"'{w}'" if i == position else w for i, w in enumerate(words)) + "]"
            else:
                quoted = typed.replace(word, f"'{word}'", 1)  # in single quotes inside the double ones
            raise ValueError(
                f"{override.input_line}: Hydra reads {word} as the number {item}; quote it to keep it as typed: "
                f'{key}="{quoted}"'
            )


def _same_number(word: str, number: float) -> bool:
    """Whether Hydra reads `word` as `number` (1_000, +5, 1e3; NaN as nan, which equals nothing)."""
    try:
        read = float(word)
    except ValueError:
        return False
    return read == number or (math.isnan(read) and math.isnan(number))


def _refuse_run_folder_in_a_sweep(overrides: list[Override]) -> None:
    """hydra.run.dir= with -m: Hydra reads only hydra.sweep.dir in a sweep, so the folder asked for would stay
    empty while the jobs wrote under multirun/<date>/<time>/ without a word."""
    for override in overrides:
        if override.key_or_group == "hydra.run.dir":
            raise ValueError(
                f"{override.input_line} is not read by a sweep (-m): its jobs write into hydra.sweep.dir/<job "
                f"number>; name the sweep's folder with hydra.sweep.dir={override.value()}"
            )


def _refuse_adding_a_listed_group(conf_dir: Path, config_name: str, overrides: list[Override]) -> None:
    """`+experiment=digits_cpu`, for a group the config's defaults list already holds (experiment: null): one line
    saying to drop the +, instead of Hydra's "Multiple values for experiment. To override a value use 'override
    experiment: digits_cpu'" and its footer."""
    added = [o for o in overrides if o.type == OverrideType.ADD and (conf_dir / o.key_or_group).is_dir()]
    if not added:
        return
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        listed = compose(config_name, return_hydra_config=True).hydra.runtime.choices
    for override in added:
        group = override.key_or_group
        if group in listed and group.split("/")[0] != "hydra":  # Hydra's own groups: its message
            plain = override.input_line.removeprefix("+")
            default = "none" if listed[group] is None else listed[group]
            raise ValueError(
                f"{override.input_line}: the {config_name} config's defaults already list {group} (default: "
                f"{default}), so choose its option without the +: {plain}"
            )


def _check_groups_exist(conf_dir: Path, config_name: str, groups: list[Override]) -> None:
    """A one-line error for a group the config does not have (`sample.py data=digits`: the checkpoint decides
    it), instead of Hydra's "Could not override 'data'. No match in the defaults list" and its footer."""
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        plain = compose(config_name, return_hydra_config=True)
        loader = GlobalHydra.instance().config_loader()
        # Hydra's own groups (launchers, sweepers) take options from its plugins too: before, a typo there
        # (hydra/launcher=slurmm) was said to be a group the config does not have.
        hydra_options = {
            o.key_or_group: loader.get_group_options(o.key_or_group)
            for o in groups
            if o.key_or_group.split("/")[0] == "hydra"
        }
    own = sorted(g for g in plain.hydra.runtime.choices if not g.startswith("hydra"))
    for override in groups:
        group, options = override.key_or_group, hydra_options.get(override.key_or_group)
        if options and str(override.value()) not in options:
            close = nearest_word(str(override.value()), options, cutoff=0.5)
            hint = f"; did you mean {group}={close}?" if close else ""
            raise ValueError(f"{override.input_line} is not an option{hint} ({group}: {', '.join(options)})")
        if override.key_or_group not in own:
            raise ValueError(
                f"{override.input_line}: the {config_name} config has no {override.key_or_group} group, so it "
                f"is not read here (its groups: {', '.join(own)})"
            )


def _selected_options(conf_dir: Path, cfg: Any, groups: list[Override]) -> dict[str, list[str]]:
    """Each config group's chosen options: Hydra records a single choice ([] for null); a list
    (callbacks=[default,fid]) is read from the command line, or, chosen by an experiment, from what was composed."""
    selected = {g: [c] if isinstance(c, str) else [] for g, c in cfg.hydra.runtime.choices.items()}
    for group, node in cfg.items():
        listed = group != "hydra" and group not in selected and OmegaConf.is_dict(node)
        if listed and (chosen := options_composed(conf_dir, str(group), set(node))):
            selected[str(group)] = chosen
    for override in groups:
        value = override.value()
        if isinstance(value, list):
            selected[override.key_or_group] = [str(v) for v in value]
    return selected


def _options(conf_dir: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))


def _is_group(conf_dir: Path, override: Override) -> bool:
    return (conf_dir / override.key_or_group).is_dir() and override.type == OverrideType.CHANGE


def _check_options(conf_dir: Path, override: Override) -> None:
    group = override.key_or_group
    if group.split("/")[0] == "hydra":
        return  # Hydra's own groups (launchers, sweepers) come from its plugins too
    options = _options(conf_dir, group)
    value = override.value()
    if isinstance(value, Glob):  # -m model='glob(unet_*)': before, "is not an option"
        if not value.filter(options):
            raise ValueError(f"{override.input_line} matches no option ({group}: {', '.join(options)})")
        return
    wanted = getattr(value, "list", value)  # a sweep (choice) lists its options
    wanted = wanted if isinstance(wanted, list) else [wanted]
    # A job of a sweep may choose several options (callbacks=[default,fid],default): each is checked.
    for option in [o for item in wanted for o in (item if isinstance(item, list) else [item])]:
        if option is None or str(option) in options:
            continue
        close = nearest_word(str(option), options, cutoff=0.5)
        hint = f"; did you mean {group}={close}?" if close else ""
        raise ValueError(f"{group}={option} is not an option{hint} ({group}: {', '.join(options)})")
