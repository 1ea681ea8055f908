"""The command line before Hydra: mistyped keys and options are named with the nearest valid one, --help and a
bad value are answered without loading torch or Lightning (start-up in about a second, not 20)."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest
from conftest import CONF, ROOT, one_error_line, run_cli
from omegaconf import OmegaConf

from difflab.run.cli import check_command_line
from difflab.runs.inherit import parse


def refusal(config: str, args: list[str]) -> str:
    """The one-line error check_command_line gives for `args` of the `config` config."""
    with pytest.raises(ValueError) as raised:
        check_command_line(CONF, config, args)
    return str(raised.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["optim.lrr=1e-4"], "optim.lrr is not a key of the train config; did you mean optim.lr?"),
        (
            ["trainer.max_stepz=3"],
            "trainer.max_stepz is not a key of the train config; did you mean trainer.max_steps?",
        ),
        (
            ["experiment=digits_cpuu"],
            "experiment=digits_cpuu is not an option; did you mean experiment=digits_cpu?",
        ),
        (
            ["-m", "model=unet_tiny,unet_smal"],
            "model=unet_smal is not an option; did you mean model=unet_small?",
        ),
        (["callbacks=[default,fdi]"], "callbacks=fdi is not an option; did you mean callbacks=fid?"),
        (["experiment=digits_cpu", "metrics.cpu_thread=0"], "did you mean metrics.cpu_threads?"),
        # Callbacks an experiment chooses as a list: before, "this config has no callbacks group".
        (
            ["experiment=digits_cpu", "callbacks.fid.num_sample=3"],
            "callbacks.fid.num_sample is not a key of the train config; did you mean callbacks.fid.num_samples?",
        ),
        (["sed=1"], "sed is not a key of the train config; did you mean seed?"),
        # Before, Hydra's "Multiple values for experiment. To override a value use 'override experiment: …'".
        (
            ["+experiment=digits_cpu"],
            "+experiment=digits_cpu: the train config's defaults already list experiment (default: none), so "
            "choose its option without the +: experiment=digits_cpu",
        ),
        # Before (helper report), "the train config has no hydra/launcher group".
        (
            ["-m", "hydra/launcher=slurmm"],
            "hydra/launcher=slurmm is not an option; did you mean hydra/launcher=slurm? (hydra/launcher: basic, ",
        ),
    ],
)
def test_a_mistyped_key_or_option_names_the_nearest_valid_one(args, message):
    raised = refusal("train", args)
    assert message in raised


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        # Before, "lr is not a key of the train config; add it with +lr=0.1 if it is new".
        ("train", ["lr=0.1"], "lr is not a key of the train config; did you mean optim.lr?"),
        (
            "train",
            ["max_steps=8"],
            "max_steps is not a key of the train config; did you mean trainer.max_steps?",
        ),
        (
            "train",
            ["batch_size=8"],
            "batch_size is not a key of the train config; did you mean data.batch_size?",
        ),
        # pipe.sample's names for sampler settings (not inpaint.steps, which sample.py also has).
        (
            "sample",
            ["ckpt=x", "steps=5"],
            "steps is not a key of the sample config; did you mean sampler.steps?",
        ),
        ("eval", ["ckpt=x", "eta=0.5"], "eta is not a key of the eval config; did you mean sampler.eta?"),
    ],
)
def test_a_key_typed_without_its_group_names_the_grouped_key(config, args, message):
    assert refusal(config, args) == message


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # Lightning users set the strategy directly: the options that set it are named, not Hydra's _target_.
        (
            ["trainer.strategy=ddp"],
            "trainer.strategy is not a key of the train config; trainer=ddp or trainer=fsdp sets it, "
            "or add it with +trainer.strategy=ddp if it is new",
        ),
        (
            ["-m", "trainer.strategy=ddp,fsdp"],
            "trainer.strategy is not a key of the train config; trainer=ddp or trainer=fsdp sets it, "
            "or add it with +trainer.strategy=ddp,fsdp if it is new",
        ),
        # A DiT's width on the default U-Net: the DiT options have it (many, so counted).
        (
            ["model.hidden_size=64"],
            "model.hidden_size is not a key of the train config; model=dit_b2, model=dit_b4 and 7 more set it",
        ),
        # An option that adds to the chosen callbacks is named as the list with it added.
        (
            ["callbacks.fid.every_n_steps=10"],
            "callbacks.fid.every_n_steps is not a key of the train config; callbacks=[default,fid] sets it",
        ),
        (
            ["callbacks=[default,phema]", "callbacks.fid.every_n_steps=10"],
            "callbacks.fid.every_n_steps is not a key of the train config; callbacks=[default,phema,fid] sets it",
        ),
    ],
)
def test_a_key_another_option_of_its_group_sets_names_that_option(args, message):
    raised = refusal("train", args)
    assert raised.startswith(message)
    assert "_target_" not in raised


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["formulation.sigma_dat=0.5"], "did you mean formulation.sigma_data (formulation=edm sets it)?"),
        (
            ["model.hidden_siz=64"],
            "did you mean model.hidden_size (model=dit_b2, model=dit_b4 and 7 more set it)?",
        ),
        # Nearer in the chosen option than in any other: the chosen one's key, as before.
        (["formulation=edm", "formulation.sigma_dat=0.5"], "did you mean formulation.sigma_data?"),
    ],
)
def test_a_misspelt_key_of_another_option_names_it_and_the_option(args, message):
    raised = refusal("train", args)
    assert raised.endswith(message)


def test_a_key_whose_value_in_another_option_is_an_interpolation_is_named():
    # conf/data/mnist.yaml's root is ${paths.data_dir}: reading it must not resolve it (an OmegaConf error was the
    # whole message: "Interpolation key 'paths.data_dir' not found").
    raised = refusal("eval", ["data.root=/tmp"])
    assert raised.startswith("data.root is not a key of the eval config; data=cifar10, data=digits and")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # Before: Hydra's "Could not override 'data'. No match in the defaults list. To append … use +data=digits"
        # and its HYDRA_FULL_ERROR footer (and +data=digits was then ignored).
        (
            ["data=digits"],
            "data=digits: the sample config has no data group, so it is not read here "
            "(its groups: model, paths, sampler, schedule)",
        ),
        (["formulation=edm"], "formulation=edm: the sample config has no formulation group"),
        # Before: the OmegaConf interpolation error above.
        (
            ["data.root=/tmp"],
            "data.root is not a key of the sample config; this config has no data group, so nothing reads "
            "data.root here",
        ),
    ],
)
def test_a_group_sample_py_does_not_read_is_named_in_one_line(args, message):
    raised = refusal("sample", args)
    assert raised.startswith(message)


def test_a_run_folder_given_to_a_sweep_is_refused_naming_the_sweeps_own():
    # Before, Hydra ignored it: the jobs wrote under multirun/<date>/<time>/ and the folder named stayed empty.
    raised = refusal("train", ["-m", "seed=1,2", "hydra.run.dir=/tmp/mine"])
    assert raised == (
        "hydra.run.dir=/tmp/mine is not read by a sweep (-m): its jobs write into hydra.sweep.dir/<job number>; "
        "name the sweep's folder with hydra.sweep.dir=/tmp/mine"
    )
    check_command_line(CONF, "train", ["-m", "seed=1,2", "hydra.sweep.dir=/tmp/mine"])


@pytest.mark.parametrize("config", ["sample", "eval", "export"])
def test_a_new_key_the_script_never_reads_is_refused_not_suggested(config):
    # These scripts read their keys by name: before, +foo=1 was taken without a word (and foo=1 suggested it).
    assert refusal(config, ["+foo=1"]) == f"+foo=1: the {config} config reads no key foo"
    assert refusal(config, ["foo=1"]) == (
        f"foo is not a key of the {config} config; a key added with + would not be read (--help lists the keys)"
    )
    assert (
        refusal("sample", ["+guidanc=2"])
        == "+guidanc=2: the sample config reads no key guidanc; did you mean guidance?"
    )


def test_a_key_no_option_sets_says_how_to_add_it():
    raised = refusal("train", ["trainer.zzzz=1"])
    assert raised == (
        "trainer.zzzz is not a key of the train config; add it with +trainer.zzzz=1 if it is new"
    )


def test_an_option_with_no_near_match_lists_the_options_in_one_clean_sentence():
    raised = refusal("train", ["experiment=zzzzzz"])
    assert raised.startswith("experiment=zzzzzz is not an option (experiment: ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-m", "model=unet_tiny,dit_tiny", "model.base_channels=8"],
            "model.base_channels is not a key of the train config with model=dit_tiny (a job of this sweep); "
            "model=unet_ddpm_celeba64, model=unet_ddpm_cifar10 and 3 more set it, or add it with "
            "+model.base_channels=8 if it is new",
        ),
        (
            [
                "-m",
                "experiment=digits_cpu",
                "model=dit_tiny,unet_small",
                "schedule=linear,cosine",
                "model.hidden_siz=8",
            ],
            "model.hidden_siz is not a key of the train config with model=dit_tiny schedule=linear (a job of this "
            "sweep); did you mean model.hidden_size?",
        ),
        (["-m", "model=glob(zz*)"], "model=glob(zz*) matches no option (model: autoencoder_kl_f4, "),
        # 72 jobs, too many to compose each: every option is still composed once (before: no key checked at all).
        (
            [
                "-m",
                "model=unet_tiny,unet_small,dit_tiny,dit_s8,unet_small_cpu,dit_s4",
                "lr_scheduler=none,warmup,warmup_cosine",
                "optim=adam,adamw",
                "schedule=linear,cosine",
                "trainer.max_stepz=1",
            ],
            "trainer.max_stepz is not a key of the train config with model=unet_tiny lr_scheduler=none optim=adam "
            "schedule=linear (a job of this sweep); did you mean trainer.max_steps?",
        ),
        (
            ["-m", "callbacks=[default,fid],default", "callbacks.fid.every_n_steps=2"],
            "callbacks.fid.every_n_steps is not a key of the train config with callbacks=default (a job of this "
            "sweep); callbacks=[default,fid] sets it",
        ),
    ],
)
def test_a_sweep_over_options_checks_each_jobs_keys_before_the_first_runs(args, message):
    # Before, the sweep began and stopped at the job lacking the key with Hydra's six-line "Could not override";
    # model=glob(…) was "not an option".
    assert refusal("train", args).startswith(message)


@pytest.mark.parametrize(
    "args",
    [
        ["experiment=digits_cpu", "metrics.cpu_threads=0", "optim.lr=1e-4"],
        ["-m", "seed=1,2", "model=unet_tiny,unet_small"],
        ["-m", "model=unet_tiny,unet_small", "model.base_channels=8"],  # a key every option of the sweep has
        ["-m", "model=glob(unet_t*)", "model.base_channels=8"],
        # A job choosing a list of options (before: "callbacks=['default', 'fid'] is not an option").
        ["-m", "callbacks=[default,fid],[default,phema]", "callbacks.sample_grid.every_n_steps=2"],
        ["+trainer.profiler=simple", "~callbacks.sample_grid", "hydra.run.dir=/tmp/x", "lr_scheduler=null"],
        ["callbacks=[default,fid]", "callbacks.fid.every_n_steps=10"],
        ["--cfg", "job", "optim.lr=1e-4"],
        ["--help", "--info", "defaults", "optim.lr=1e-4"],
        ["-cn", "other", "anything.goes=1"],  # another config: left to Hydra
        [
            "-m",
            "hydra/launcher=slurm",
            "trainer=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.nodes=2",
        ],
        [
            "-m",
            "hydra/launcher=slurm",
            "+hydra.launcher.additional_parameters.mail-type=END",
            "hydra.sweep.dir=/x",
        ],
        # Review: refused by the launcher-key check (++ as +; an item of a list the launcher has; --info's
        # value is never a flag).
        ["-m", "hydra/launcher=slurm", "++hydra.launcher.additional_parameters.mail-type=END"],
        ["-m", "hydra/launcher=slurm", "hydra.launcher.srun_args.0=--x"],
        ["--info", "--help"],
        ["--info", "-p", "optim"],
    ],
)
def test_valid_command_lines_pass(args):
    check_command_line(CONF, "train", args)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        # Before, Hydra's "To append to your config use +hydra.launcher.partiton=gpu" (submitit then refused it).
        (
            ["-m", "hydra/launcher=slurm", "trainer=slurm", "hydra.launcher.partiton=gpu"],
            "hydra.launcher.partiton is not a key of the slurm launcher (hydra/launcher=slurm); did you mean "
            "hydra.launcher.partition?",
        ),
        # Before, Hydra's "Key 'partition' not in 'BasicLauncherConf'".
        (
            ["-m", "experiment=cifar10_ddpm", "trainer=slurm", "hydra.launcher.partition=gpu"],
            "hydra.launcher.partition is not a key of the basic launcher; hydra/launcher=slurm has it: add "
            "hydra/launcher=slurm",
        ),
    ],
)
def test_a_launcher_key_the_launcher_lacks_names_the_key_or_the_launcher(args, message):
    assert refusal("train", args) == message


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        ("train.py", ["--help", "optim.lrr=1"], "did you mean optim.lr?"),
        ("train.py", ["--cfg", "job", "optim.lrr=1"], "did you mean optim.lr?"),
        ("train.py", ["--cfg=job", "--resolve", "data=digit"], "did you mean data=digits?"),
        ("train.py", ["--info", "config", "optim.lrr=1"], "did you mean optim.lr?"),
        ("sample.py", ["-h", "sampler.stepz=1"], "did you mean sampler.steps?"),
        ("evaluate.py", ["--help", "sampler.stepz=1"], "did you mean sampler.steps?"),
        ("export.py", ["--help", "formatt=safetensors"], "did you mean format?"),
    ],
)
def test_a_typo_beside_help_or_cfg_is_named_as_without_them(script, args, message):
    # Before, --help gave a traceback ending in "Key 'lrr' is not in struct", --cfg job Hydra's multi-line error.
    assert message in one_error_line(run_cli(script, *args))


def loads_after(script: str, *args: str) -> set[str]:
    """The heavy libraries among the modules an entry script imported by the time it exited."""
    probe = (
        "import runpy, sys\n"
        f"sys.argv = [{script!r}, *{list(args)!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(ROOT / script)!r}, run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'lightning', 'torch_fidelity', 'torchvision') if m in sys.modules]\n"
        "print('loaded:', *heavy, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("loaded:")]
    return set(line.split()[1:])


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("train.py", ["--help"]),
        ("train.py", ["optim.lrr=1"]),
        ("train.py", ["trainer.max_steps=abc", "hydra.run.dir=/nonexistent/never"]),
        ("train.py", ["data.batch_size=0", "hydra.run.dir=/nonexistent/never"]),  # a value out of range
        ("sample.py", ["--help"]),
        (
            "sample.py",
            ["ckpt=any.ckpt", "sampler.steps=abc"],
        ),  # before: torch and Lightning loaded first (4 s)
        ("evaluate.py", ["--help"]),
        ("evaluate.py", ["ckpt=any.ckpt", "n=1"]),
        ("export.py", ["--help"]),
    ],
)
def test_help_typos_and_bad_values_load_no_torch(script, args):
    assert loads_after(script, *args) == set()


CRASHING_ENTRY = """
import ctypes, sys
from pathlib import Path
from difflab.run.cli import launch

def crash_in_a_native_library(cfg):
    ctypes.string_at(0)  # reads address 0: a segmentation fault, as a broken collective or kernel gives

sys.argv = [sys.argv[0], f"hydra.run.dir={sys.argv[1]}", "hydra.output_subdir=null"]
launch(crash_in_a_native_library, "sample", Path(sys.argv[0]).parent)
"""


def test_a_crash_inside_a_native_library_prints_where_it_happened(tmp_path):
    """A segfault (a collective library on a cluster, a kernel) is not a silent exit -11: every entry point
    prints the Python stack that led to it, so a crashed rank says where it was."""
    script = tmp_path / "entry.py"
    script.write_text(CRASHING_ENTRY)
    (tmp_path / "sample.yaml").write_text("n: 1\n")
    result = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == -11, result.stderr[-2000:]
    assert "Segmentation fault" in result.stderr, result.stderr[-2000:]
    assert "crash_in_a_native_library" in result.stderr, result.stderr[-2000:]


def test_ctrl_c_while_starting_is_one_line_and_exit_130(monkeypatch, capsys):
    # Before, a Ctrl-C in the seconds torch takes to load (in the run's checks) printed a 40-line traceback.
    import difflab.run.cli as cli

    monkeypatch.setattr("difflab.run.errors._work", {"began": False})

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run_hydra", interrupted)
    monkeypatch.setattr(cli.faulthandler, "enable", lambda: None)  # capsys's stderr has no file descriptor
    monkeypatch.setattr(sys, "argv", ["train.py", "experiment=digits_cpu"])
    try:
        cli.launch(lambda cfg: None, "train", CONF)
    except KeyboardInterrupt:  # caught here: escaping, it would stop pytest itself
        pytest.fail("the Ctrl-C went past launch as a traceback")
    except SystemExit as exited:
        assert exited.code == 130
    else:
        pytest.fail("launch went on after a Ctrl-C")
    assert (
        capsys.readouterr().err
        == "error: train.py interrupted (Ctrl-C) while starting; its work had not begun\n"
    )


def terminated(*args: object) -> None:
    signal.raise_signal(signal.SIGTERM)


def worked_then_terminated(*args: object) -> None:
    from difflab.run.errors import exit_if_stopped

    with exit_if_stopped("train.py"):
        pass
    signal.raise_signal(signal.SIGTERM)


def swept_then_terminated(launcher: str) -> Callable[..., None]:
    """A sweep of seed=1,2 under `launcher` that began (its checks passed), stopped before its first job."""

    def run(*args: object) -> None:
        from difflab.run.sweep_stopped import note_sweep

        hydra = {"launcher": {"_target_": launcher}, "sweeper": {}, "overrides": {"task": ["seed=1,2"]}}
        note_sweep(OmegaConf.create({"hydra": hydra}))
        signal.raise_signal(signal.SIGTERM)

    return run


BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"
SLURM = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


@pytest.mark.parametrize(
    ("run", "args", "when"),
    [
        # Before, a job cancelled in its first seconds (Hydra composing, the checks, torch loading) ended silently.
        (terminated, [], ["while starting; its work had not begun"]),
        # A sweep stopped before its checks passed has run nothing (before: "while running a sweep").
        (terminated, ["-m", "seed=1,2"], ["while starting; its work had not begun"]),
        # A sweep whose jobs run here: the jobs that did not run are named.
        (
            swept_then_terminated(BASIC),
            ["-m", "seed=1,2"],
            [
                "while running a sweep; the jobs that ended keep their results",
                "2 of the sweep's 2 jobs did not run: #0 (seed=1), #1 (seed=2); sweep them again into a new "
                "hydra.sweep.dir",
            ],
        ),
        # A sweep's head process waits on jobs a cluster runs: they go on (before, "the jobs that ended keep their
        # results", as if the stop had ended them).
        (
            swept_then_terminated(SLURM),
            ["-m", "seed=1,2"],
            [
                "while submitting or waiting on its jobs; those submitted go on in the cluster's queue (scancel "
                "stops them)"
            ],
        ),
        # Between a sweep's jobs, or in Hydra's end of a job: the work's own handling has ended.
        (worked_then_terminated, [], ["after its work; what it had finished is kept"]),
    ],
)
def test_sigterm_outside_the_work_is_one_line_saying_when_and_exit_143(monkeypatch, capsys, run, args, when):
    import difflab.run.cli as cli

    monkeypatch.setattr("difflab.run.errors._work", {"began": False})
    monkeypatch.setattr(
        "difflab.run.sweep_stopped._sweep", {"began": False, "submits": False, "jobs": [], "started": None}
    )
    monkeypatch.setattr(cli, "run_hydra", run)
    monkeypatch.setattr(cli.faulthandler, "enable", lambda: None)
    monkeypatch.setattr(sys, "argv", ["train.py", "experiment=digits_cpu", *args])
    with pytest.raises(SystemExit) as exited:
        cli.launch(lambda cfg: None, "train", CONF)
    assert exited.value.code == 143
    said = [f"error: train.py stopped by SIGTERM {when[0]}", *(f"error: {line}" for line in when[1:])]
    assert capsys.readouterr().err.splitlines() == said
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


@pytest.mark.parametrize(("rank", "said"), [("0", True), ("1", False)])
def test_a_resumes_overrides_are_named_by_rank_zero_only(tmp_path, monkeypatch, capsys, rank, said):
    # Before, each DDP process Lightning started (rerunning the command) printed the same line again.
    import difflab.run.cli as cli
    from difflab.runs.inherit import OVERRIDES_FILE

    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / OVERRIDES_FILE).write_text(
        "- model=unet_tiny\n- trainer=fsdp\n- trainer.strategy.cpu_offload=true\n"
    )
    for name in ("RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_RANK", rank)
    monkeypatch.setattr(cli, "run_hydra", lambda *args: None)
    monkeypatch.setattr(cli, "with_this_ranks_run_folder", lambda args: args)
    monkeypatch.setattr(cli.faulthandler, "enable", lambda: None)
    monkeypatch.setattr(
        sys, "argv", ["train.py", "ckpt_path=last", f"hydra.run.dir={run}", "trainer=default"]
    )
    cli.launch(lambda cfg: None, "train", CONF, inherit=True)
    lines = [
        "not taken from the run, under a group given now: trainer.strategy.cpu_offload=true",
        "resuming with the run's own overrides: model=unet_tiny",
    ]
    assert capsys.readouterr().out.splitlines() == (lines if said else [])


@pytest.mark.parametrize(
    ("config", "arg", "message"),
    [
        # Before: Hydra's "Ambiguous value for argument", three numbered ways out and its HYDRA_FULL_ERROR footer.
        # Then advice the shell undid: prompt='a,b' typed in bash reaches Hydra as prompt=a,b (helper report).
        (
            "sample",
            "prompt=zero, drawn with a thick pen",
            "prompt=zero, drawn with a thick pen is several values, a sweep, which needs -m (a list is prompt=[…]); "
            "to give it as one text, quote it (the shell keeps the inner quotes): \"prompt='zero, drawn with a thick pen'\"",
        ),
        # Before, embedded and recorded as the prompts "1000" and "5" (a float was refused already).
        (
            "sample",
            "prompt=1_000",
            "prompt=1_000: Hydra reads 1_000 as the number 1000; quote it to keep it as typed: prompt=\"'1_000'\"",
        ),
        (
            "eval",
            "negative_prompt=[seven,+5]",
            "negative_prompt=[seven,+5]: Hydra reads +5 as the number 5; quote it to keep it as typed: "
            "negative_prompt=\"[seven,'+5']\"",
        ),
        # Before: "prompt=1000.0 holds the number 1000.0", the word typed gone from the line.
        (
            "sample",
            "prompt=[a cat,1e3]",
            "prompt=[a cat,1e3]: Hydra reads 1e3 as the number 1000.0; quote it to keep it as typed: "
            "prompt=\"[a cat,'1e3']\"",
        ),
        # Review: the first 1e3 typed was quoted, inside "1e3 cats"; NaN matched no word (nan equals nothing).
        (
            "sample",
            "prompt=[1e3 cats,1e3]",
            "prompt=[1e3 cats,1e3]: Hydra reads 1e3 as the number 1000.0; quote it to keep it as typed: "
            "prompt=\"[1e3 cats,'1e3']\"",
        ),
        (
            "sample",
            "prompt=NaN",
            "prompt=NaN: Hydra reads NaN as the number nan; quote it to keep it as typed: prompt=\"'NaN'\"",
        ),
        (
            "sample",
            "prompt=0.50",
            "prompt=0.50: Hydra reads 0.50 as the number 0.5; quote it to keep it as typed: prompt=\"'0.50'\"",
        ),
        # Before: Hydra's "LexerNoViableAltException", a caret line and a link.
        (
            "train",
            "data.root=~/pictures",
            "cannot read the override 'data.root=~/pictures': token recognition error at: '~'; to give the value "
            "as it is, quote it (the shell keeps the inner quotes): \"data.root='~/pictures'\"",
        ),
    ],
)
def test_a_value_hydra_cannot_read_as_one_value_says_to_quote_it(config, arg, message):
    assert refusal(config, [arg]) == message


@pytest.mark.parametrize(
    "text",
    [
        "two, $HOME",
        "it's one, two",
        'say "hi", twice',
        "a `b`, c",
        "ok, go!",
        "x, c:\\",
        'q\\"x, y',
        "a\\b, c",
    ],
)
def test_the_quoting_advice_survives_the_shell_for_any_text(text):
    # Before: "prompt='…'" in double quotes, where bash expands $HOME and a backquote, and a quote ends the word.
    advice = refusal("sample", [f"prompt={text}"]).split("(the shell keeps the inner quotes): ", 1)[1]
    pasted = subprocess.run(["bash", "-c", f"printf %s {advice}"], capture_output=True, text=True, check=True)
    assert parse(pasted.stdout).value() == text


def test_a_sweep_with_multirun_is_left_to_hydra():
    check_command_line(CONF, "train", ["-m", "seed=1,2"])


def test_prompts_hydra_reads_as_the_numbers_typed_pass():
    check_command_line(CONF, "sample", ["prompt=[7,seven]", "negative_prompt=12"])


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        # Before: a ConfigAttributeError traceback ("Key 'seed' is not in struct").
        ("train", ["~seed"], "~seed deletes a setting the train config reads"),
        ("sample", ["~seed"], "~seed deletes a setting the sample config reads"),
        ("train", ["~model"], "~model deletes the model group, which the train config reads"),
        # Before: trained at Adam's own default lr without a word (the summary did not show it either).
        ("train", ["~optim.lr"], "~optim.lr deletes a setting the train config reads"),
    ],
)
def test_deleting_what_a_run_reads_is_one_line(config, args, message):
    assert refusal(config, args).startswith(message)


@pytest.mark.parametrize(
    "args",
    [
        ["~callbacks.sample_grid"],
        ["~logger"],
        # A recipe's key the swapped-in model does not take: the remedy run.argument_types names.
        ["experiment=mnist_sr_cpu", "model=dit_tiny", "~model.attention_resolutions"],
    ],
)
def test_deleting_what_a_run_does_without_is_let_through(args):
    check_command_line(CONF, "train", args)


def test_a_hydra_flag_before_a_resumes_overrides_shows_the_resumed_config(cli_run, tmp_path):
    # Helper report: the run's own overrides went in ahead of the flag, and argparse printed its usage and
    # "unrecognized arguments"; the same flag placed last worked.
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    shown = run_cli("train.py", "--cfg", "job", "ckpt_path=last", f"hydra.run.dir={run}")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "base_channels: 16" in shown.stdout  # the run's model=unet_tiny, not the default unet_small's 32


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["-m", "model=unet_tiny", "--cfg", "job"],
            "error: -m and --cfg cannot be given together (each is a command of its own): drop one; to see a sweep "
            "job's config, drop -m and give one value of each swept key",
        ),
        (
            ["--info", "--cfg=job"],
            "error: --info and --cfg cannot be given together (each is a command of its own): drop one",
        ),
    ],
)
def test_two_of_hydras_commands_are_one_line(args, message):
    # Before, a traceback ending in "Only one of --run, --multirun, --cfg, --info and --shell_completion can be
    # specified".
    assert one_error_line(run_cli("train.py", *args)) == message
