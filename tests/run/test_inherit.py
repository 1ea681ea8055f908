"""A resume takes its run folder's overrides as data only: nothing in a run folder can run code or write files."""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import pytest
from conftest import CONF, one_error_line, run_cli
from omegaconf import OmegaConf

from difflab.runs.inherit import OVERRIDES_FILE, why_not_inherited, with_run_overrides


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class _TouchOnLoad:
    """A pickle that, when unpickled with weights_only=False, writes the file it names."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.mark.slow
def test_a_hostile_run_folder_runs_no_code_and_touches_no_file(cli_run, tmp_path):
    """The two payloads of issue 17: a pickle loaded by a callback's _target_, and a file truncated by one."""
    run = tmp_path / "run"
    shutil.copytree(cli_run, run)
    marker, victim, payload = tmp_path / "marker", tmp_path / "victim.txt", tmp_path / "payload.pkl"
    victim.write_text("precious")
    payload.write_bytes(pickle.dumps(_TouchOnLoad(marker)))
    hostile = [
        f"+callbacks.x={{_target_:torch.load,f:{payload},weights_only:false}}",
        f"+callbacks.y={{_target_:builtins.open,_args_:[{victim},w]}}",
    ]
    for stored in (hostile, hostile[::-1]):
        overrides = [*OmegaConf.load(cli_run / OVERRIDES_FILE), *stored]
        OmegaConf.save(OmegaConf.create(overrides), run / OVERRIDES_FILE)
        before = snapshot(run)
        line = one_error_line(run_cli("train.py", f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"))
        assert f"{run / OVERRIDES_FILE} holds '{stored[0]}'" in line
        assert "a resume does not take from a run folder (it adds a key)" in line
        assert not marker.exists()
        assert victim.read_text() == "precious"
        assert snapshot(run) == before


@pytest.mark.parametrize(
    ("override", "why"),
    [
        ("+callbacks.x={_target_:torch.load,f:p}", "it adds a key"),
        ("++trainer.profiler=simple", "it adds a key"),
        ("~callbacks.sample_grid", "it deletes a key"),
        ("callbacks.sample_grid._target_=builtins.open", "it sets a `_target_` or another `_` key"),
        ("callbacks.sample_grid.sampler={_target_:builtins.open}", "its value is not plain data"),
        ("data.root=${oc.env:HOME}", "its value is not plain data"),
        ("callbacks.model_checkpoint.dirpath=/home/someone/.ssh", "it says where files are written"),
        ("callbacks.model_checkpoint.filename=authorized_keys", "it says where files are written"),
        ("hydra.run.dir=/tmp/elsewhere", "it says where files are written"),
        ("paths.output_dir=/tmp/elsewhere", "it says where files are written"),
        ("seed=choice(1,2)", "it is a sweep"),
        ("model@callbacks.x=unet_tiny", "it places a config at another package"),
        ("model=../../../tmp/evil", "model=../../../tmp/evil is not a config in"),
        ("callbacks=[default,evil]", "callbacks=evil is not a config in"),
    ],
)
def test_overrides_a_resume_refuses(override, why):
    assert why in why_not_inherited(override, CONF)


@pytest.mark.parametrize(
    "override",
    [
        "model=unet_tiny",
        "experiment=digits_cpu",
        "callbacks=[default,fid]",
        "trainer.max_steps=10",
        "model.channel_mults=[1,2]",
        "data.root=../shared/data",
        "tags=[a,b]",
        "optim.lr=1e-4",
        "lr_scheduler=null",
    ],
)
def test_overrides_a_resume_takes(override):
    assert why_not_inherited(override, CONF) is None


def test_run_overrides_come_first_and_lose_to_the_command_line(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    stored = ["experiment=mnist_ddpm", "tags=[a]", "trainer.max_steps=10", "ckpt_path=old.ckpt"]
    OmegaConf.save(OmegaConf.create(stored), run / OVERRIDES_FILE)
    argv = ["train.py", "ckpt_path=last", f"hydra.run.dir={run}", "trainer.max_steps=20"]
    assert with_run_overrides(argv, CONF) == ["train.py", "experiment=mnist_ddpm", "tags=[a]", *argv[1:]]
    from_file = ["train.py", f"ckpt_path={run / 'checkpoints' / 'step_0000010.ckpt'}", "tags=[b]"]
    assert with_run_overrides(from_file, CONF) == [
        "train.py",
        "experiment=mnist_ddpm",
        "trainer.max_steps=10",
        *from_file[1:],
    ]
    assert with_run_overrides(["train.py", "trainer.max_steps=20"], CONF) == [
        "train.py",
        "trainer.max_steps=20",
    ]


def test_quoted_paths_find_the_run_folder(tmp_path):
    """`hydra.run.dir="…"` and `ckpt_path="…"` are read as Hydra reads them, without the quotes."""
    run = tmp_path / "my run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(["model=unet_tiny"]), run / OVERRIDES_FILE)
    for argv in (
        ["train.py", "ckpt_path=last", f'hydra.run.dir="{run}"'],
        ["train.py", f"ckpt_path='{run / 'checkpoints' / 'last.ckpt'}'"],
    ):
        assert with_run_overrides(argv, CONF)[1] == "model=unet_tiny"


def test_relative_paths_are_read_against_the_folder_the_run_was_launched_from(tmp_path):
    """Before, a resume started from another folder read `autoencoder=ae` against its own: "autoencoder not found"."""
    launched = tmp_path / "project"
    for name in ("ae", "pictures", "my data"):
        (launched / name).mkdir(parents=True)
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    stored = [
        "autoencoder=ae",
        "data.root=pictures",
        "latent_cache_dir='my data'",
        "init_from=google/ddpm-cifar10-32",  # a Hub id, not a folder there: kept as typed
        "model=unet_tiny",
    ]
    OmegaConf.save(OmegaConf.create(stored), run / OVERRIDES_FILE)
    OmegaConf.save(
        OmegaConf.create({"hydra": {"runtime": {"cwd": str(launched)}}}), run / ".hydra" / "hydra.yaml"
    )
    assert with_run_overrides(["train.py", "ckpt_path=last", f"hydra.run.dir={run}"], CONF)[1:6] == [
        f"autoencoder='{launched / 'ae'}'",
        f"data.root='{launched / 'pictures'}'",
        f"latent_cache_dir='{launched / 'my data'}'",
        "init_from=google/ddpm-cifar10-32",
        "model=unet_tiny",
    ]


def test_an_overrides_file_that_is_not_a_list_of_overrides_is_refused(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    argv = ["train.py", "ckpt_path=last", f"hydra.run.dir={run}"]
    for text in ("[unclosed", "{a: 1}", "[[1, 2]]"):
        (run / OVERRIDES_FILE).write_text(text)
        with pytest.raises(ValueError, match="is not a list of overrides"):
            with_run_overrides(argv, CONF)


def test_a_resume_takes_the_overrides_of_the_runs_latest_launch(tmp_path):
    """A run extended by a resume (trainer.max_steps=2000) and stopped: the next plain resume goes on to 2000, as
    that launch was told, not back to the first launch's 20 (which ended at once, rc 0, having trained nothing)."""
    run = tmp_path / "run"
    launches = {
        ".hydra": ["experiment=digits_cpu", "trainer.max_steps=20"],
        ".hydra/resumed_step_0000020": ["experiment=digits_cpu", "ckpt_path=last", "trainer.max_steps=2000"],
    }
    for when, (folder, overrides) in enumerate(launches.items()):
        (run / folder).mkdir(parents=True)
        OmegaConf.save(OmegaConf.create(overrides), run / folder / "overrides.yaml")
        os.utime(run / folder / "overrides.yaml", (1000 + when, 1000 + when))
    argv = ["train.py", "ckpt_path=last", f"hydra.run.dir={run}"]
    assert with_run_overrides(argv, CONF) == [
        "train.py",
        "experiment=digits_cpu",
        "trainer.max_steps=2000",
        *argv[1:],
    ]
    # Rewound to an earlier checkpoint later still: that launch is the latest, whatever step it started from.
    rewound = run / ".hydra" / "resumed_step_0000010"
    rewound.mkdir()
    OmegaConf.save(
        OmegaConf.create(["experiment=digits_cpu", "trainer.max_steps=50"]), rewound / "overrides.yaml"
    )
    os.utime(rewound / "overrides.yaml", (1002, 1002))
    assert with_run_overrides(argv, CONF)[1:3] == ["experiment=digits_cpu", "trainer.max_steps=50"]


@pytest.mark.parametrize(
    ("stored", "given", "dropped"),
    [
        # A key the run's experiment adds: before, "callbacks.fid is not a key of the train config".
        (["experiment=digits_cpu"], ["callbacks.fid.num_samples=32"], None),
        # A key under a group switched now: before, Hydra's multi-line "Key 'strategy' is not in struct".
        (
            ["trainer=fsdp", "trainer.strategy.state_dict_type=sharded"],
            ["trainer=default"],
            "trainer.strategy.state_dict_type=sharded",
        ),
    ],
    ids=["experiment key", "switched group"],
)
def test_a_resume_reads_the_command_line_with_the_runs_own_overrides(tmp_path, stored, given, dropped):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(stored), run / OVERRIDES_FILE)
    result = run_cli("train.py", "ckpt_path=last", f"hydra.run.dir={run}", *given)
    # Past the command line: refused only for want of a checkpoint in this stand-in run folder.
    assert one_error_line(result).startswith("error: ckpt_path=last: no checkpoint at")
    if dropped:
        assert f"not taken from the run, under a group given now: {dropped}" in result.stdout
