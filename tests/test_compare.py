"""Comparing runs: every run writes metrics.jsonl whatever its logger, and compare draws one PNG with a line per
run from those files; bad input named in one line."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from conftest import FAST_TRAIN, compose_config, run_cli
from matplotlib.colors import to_hex
from PIL import Image

from difflab.compare import figure, find_runs, main, run_labels
from difflab.run.train import train
from difflab.runlogs import run_series
from difflab.tracking.wandb_logger import finish_wandb_run

LOGGERS = ("csv", "tensorboard", "none", "wandb")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding four finished runs, one per logger (none and W&B included), at two learning rates."""
    folder = tmp_path_factory.mktemp("sweep")
    for name, logger in enumerate(LOGGERS):
        lr = "2e-4" if name % 2 == 0 else "1e-3"
        overrides = [*FAST_TRAIN, f"logger={logger}", f"optim.lr={lr}", "trainer.max_steps=4"]
        train(compose_config("train", overrides, folder / str(name)))
        finish_wandb_run()  # as train.py does after train()
    return folder


def test_every_run_writes_the_same_metrics_file_whatever_its_logger(sweep: Path) -> None:
    series = [run_series(sweep / str(name)) for name in range(len(LOGGERS))]
    for run in series:
        assert set(run) >= {"train/loss", "val/loss"}
        assert [step for step, _ in run["train/loss"]] == [0, 1, 2, 3]
        assert [step for step, _ in run["val/loss"]] == [2, 4]  # at the step of the weights scored
    assert series[0]["train/loss"] == series[2]["train/loss"]  # the same training, logged alike
    assert series[0]["train/loss"] != series[1]["train/loss"]  # different learning rates


def test_a_sweep_folder_becomes_one_png_with_a_line_per_run(sweep: Path, tmp_path: Path, capsys) -> None:
    runs = [sweep / str(name) for name in range(len(LOGGERS))]
    assert find_runs([sweep]) == runs
    assert run_labels(runs) == ["0", "1", "2", "3"]  # no Hydra overrides recorded: the folder names
    out = tmp_path / "compare.png"
    assert main([str(sweep), "--out", str(out)]) == 0
    assert "4 runs, train/loss, val/loss -> " in capsys.readouterr().out
    assert Image.open(out).size[0] > 600
    assert main([str(sweep), "--out", str(out)]) == 2  # never overwritten
    assert "already exists" in capsys.readouterr().err


def test_a_run_named_twice_is_one_line_of_the_plot(sweep: Path, tmp_path: Path, capsys) -> None:
    runs = [sweep / str(name) for name in range(len(LOGGERS))]
    assert find_runs([sweep / "1", sweep, sweep / "1" / ".." / "1"]) == [runs[1], runs[0], *runs[2:]]
    assert main([str(sweep / "0"), str(sweep / "0"), "--out", str(tmp_path / "c.png")]) == 0
    assert "1 run, train/loss, val/loss -> " in capsys.readouterr().out


def test_a_run_folder_named_without_logs_is_named(tmp_path: Path, capsys) -> None:
    run = tmp_path / "refused"
    (run / ".hydra").mkdir(parents=True)
    assert main([str(run), "--out", str(tmp_path / "c.png")]) == 2
    assert capsys.readouterr().err == (
        f"error: {run} holds no run logs (the metrics.jsonl every train run writes, but for debug=fdr, which logs "
        "nothing, and a run refused before its first step)\n"
    )
    assert not (tmp_path / "c.png").exists()


def test_folders_without_runs_or_metrics_are_named(sweep: Path, tmp_path: Path, capsys) -> None:
    assert main([str(tmp_path), "--out", str(tmp_path / "a.png")]) == 2
    assert "holds no run logs" in capsys.readouterr().err
    assert main([str(sweep), "--metrics", "val/nope", "--out", str(tmp_path / "b.png")]) == 2
    assert "none of val/nope was logged" in capsys.readouterr().err


def test_a_short_sweep_with_the_default_logging_compares_runs_named_by_their_overrides(
    tmp_path: Path, capsys
) -> None:
    sweep = tmp_path / "sweep"
    quick = [
        "model=unet_tiny",
        "trainer=cpu",
        "trainer.enable_progress_bar=false",
        "callbacks.sample_grid=null",
    ]
    # Job folders nested by hydra.sweep.subdir (before, a sweep's direct subfolders alone were searched: "holds
    # no run logs").
    result = run_cli(
        "train.py", "-m", "optim.lr=1e-3,2e-4", *quick, "trainer.max_steps=20", "logger=csv",
        f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}/job",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    runs = find_runs([sweep])
    assert runs == [sweep / "0" / "job", sweep / "1" / "job"]
    assert run_labels(runs) == ["optim.lr=0.001", "optim.lr=0.0002"]  # what differs, not the folders 0 and 1
    assert main([str(sweep), "--out", str(tmp_path / "compare.png")]) == 0
    shown = capsys.readouterr().out
    # 20 steps, shorter than val_check_interval: each run validates at its last step (val/loss drawn too).
    assert f"optim.lr=0.001: {sweep / '0' / 'job'}" in shown and "2 runs, train/loss, val/loss -> " in shown


def test_an_out_below_a_file_is_one_line(tmp_path: Path, capsys) -> None:
    """Before, a FileExistsError traceback from making the PNG's folder."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 0, "train/loss": 1.0}\n{"step": 1, "train/loss": 0.5}\n')
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert main([str(run), "--out", str(blocker / "compare.png")]) == 2
    error = capsys.readouterr().err
    assert error == f"error: cannot write {blocker / 'compare.png'}: {blocker} is a file, not a folder\n"
    assert blocker.read_text() == "not a folder"


def test_runs_are_labelled_by_what_differs_in_meaning_not_in_spelling(tmp_path: Path) -> None:
    # Before, compile=False against compile=false (and 1e-4 against 0.0001) named every line by both.
    spelled = {
        "a": ["compile=False", "optim.lr=1e-4", "+extra=1", "seed=1"],
        "b": ["compile=false", "optim.lr=0.0001", "extra=1", "seed=2"],
    }
    for name, overrides in spelled.items():
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    assert run_labels([tmp_path / "a", tmp_path / "b"]) == ["seed=1", "seed=2"]


def test_a_deleted_setting_is_labelled_as_typed(tmp_path: Path) -> None:
    # Before, "callbacks.sample_grid=" for the run that deleted it, as if it had been set to nothing.
    typed = {"a": ["~callbacks.sample_grid", "seed=1"], "b": ["callbacks.sample_grid=null", "seed=1"]}
    typed["c"] = [
        "~callbacks.sample_grid=null",
        "seed=1",
    ]  # deleted where it is null: a deletion all the same
    for name, overrides in typed.items():
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    for deleted in ("a", "c"):
        labels = run_labels([tmp_path / deleted, tmp_path / "b"])
        assert labels == ["~callbacks.sample_grid", "callbacks.sample_grid=null"]


def test_runs_are_labelled_by_what_they_train_not_where_they_ran(tmp_path: Path) -> None:
    """Before, "data.num_workers=4,logger=csv,metrics.cache_dir=/scratch/a/cache,optim.lr=1e-3": where a run kept its
    cache or how it was launched drowned the one setting that changed what it trained."""
    launched = {
        "a": ["optim.lr=1e-3", "metrics.cache_dir=/scratch/a/cache", "logger=csv", "data.num_workers=4"],
        "b": ["optim.lr=2e-4", "metrics.cache_dir=/scratch/b/cache", "data.num_workers=0"],
    }
    for name, overrides in launched.items():
        (tmp_path / name / ".hydra").mkdir(parents=True)
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    assert run_labels([tmp_path / "a", tmp_path / "b"]) == ["optim.lr=1e-3", "optim.lr=2e-4"]
    # Where only such a key differs, it is what tells the lines apart: said, not dropped.
    (tmp_path / "b" / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["optim.lr=1e-3", "metrics.cache_dir=/scratch/b/cache"])
    )
    assert run_labels([tmp_path / "a", tmp_path / "b"]) == [
        "data.num_workers=4,logger=csv,metrics.cache_dir=/scratch/a/cache",
        "metrics.cache_dir=/scratch/b/cache",
    ]
    # What W&B run names leave out for length (a callback's setting, the data folder) changes what a run
    # trains: it stays in the label (review of the first version, which hid them).
    for name, decay, root in (("a", "0.999", "/data/faces"), ("b", "0.9999", "/data/cars")):
        overrides = ["optim.lr=1e-3", f"callbacks.ema.decay={decay}", f"data.root={root}", f"logger={name}"]
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    assert run_labels([tmp_path / "a", tmp_path / "b"]) == [
        "callbacks.ema.decay=0.999,data.root=/data/faces",
        "callbacks.ema.decay=0.9999,data.root=/data/cars",
    ]


def test_a_setting_one_run_left_at_its_default_is_labelled_by_the_default_it_used(tmp_path: Path) -> None:
    """Before, "optim.lr=1e-3" beside an empty label made every line fall back to its folder name, and a key
    given its default value in one run counted as a difference."""
    launched = {
        "a": (["optim.lr=1e-3", "schedule=cosine"], "0.0002", "linear"),
        "b": ([], "0.0002", "linear"),
        "c": (["optim.lr=2e-4", "seed=3"], "0.0002", "linear"),
    }
    for name, (overrides, lr, schedule) in launched.items():
        logged_run(tmp_path / name, overrides)
        # As Hydra writes them: the composed config, and the option chosen for each group.
        config = {"optim": {"lr": float(overrides[0].split("=")[1]) if overrides else float(lr)}, "seed": 3}
        (tmp_path / name / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
        chosen = next((o.split("=")[1] for o in overrides if o.startswith("schedule=")), schedule)
        hydra = {"hydra": {"runtime": {"choices": {"schedule": chosen, "optim": "adam"}}}}
        (tmp_path / name / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    runs = [tmp_path / name for name in launched]
    # b and c trained the same (c typed the defaults, spelled otherwise): said with their folders (before,
    # "optim.lr=0.0002,…" and "optim.lr=2e-4,…" alone, two settings to the eye).
    assert run_labels(runs) == [
        "a: optim.lr=1e-3,schedule=cosine",
        "b: optim.lr=0.0002,schedule=linear",
        "c: optim.lr=2e-4,schedule=linear",
    ]
    # b and c alone: nothing differs in meaning, so the folder tells them apart.
    assert run_labels(runs[1:]) == ["b", "c"]
    # Read from the launch whose overrides label the run: a resume's (review: before, from the first launch's).
    resumed = tmp_path / "b" / ".hydra" / "resumed_step_0000002"
    resumed.mkdir()
    (resumed / "overrides.yaml").write_text(yaml.safe_dump(["ckpt_path=last"]))
    (resumed / "config.yaml").write_text(yaml.safe_dump({"optim": {"lr": 0.0005}, "seed": 3}))
    assert run_labels(runs[1:]) == ["optim.lr=0.0005", "optim.lr=2e-4"]
    shutil.rmtree(resumed)
    # A group chosen as null (Hydra records experiment: null) is said as Hydra reads it: review, before
    # "experiment=None".
    logged_run(tmp_path / "d", ["experiment=cifar10_ddpm"])
    for name in ("b", "d"):
        hydra = {"hydra": {"runtime": {"choices": {"experiment": "cifar10_ddpm" if name == "d" else None}}}}
        (tmp_path / name / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    assert run_labels([tmp_path / "b", tmp_path / "d"]) == ["experiment=null", "experiment=cifar10_ddpm"]


def test_a_resumed_run_is_labelled_by_its_latest_launch(tmp_path: Path) -> None:
    """Before, by its first launch's overrides (trainer.max_steps=40) under a curve that goes on to step 60."""
    launches = {
        "a/.hydra/overrides.yaml": ["trainer.max_steps=40"],
        "a/.hydra/resumed_step_0000040/overrides.yaml": ["trainer.max_steps=60", "ckpt_path=last"],
        "b/.hydra/overrides.yaml": ["trainer.max_steps=40"],
    }
    for name, overrides in launches.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(yaml.safe_dump(overrides))
    assert run_labels([tmp_path / "a", tmp_path / "b"]) == ["trainer.max_steps=60", "trainer.max_steps=40"]


def test_a_run_with_nothing_to_draw_is_named_not_silently_left_out(tmp_path: Path, capsys) -> None:
    # Before: "2 runs, train/loss -> …" and a legend with one line, the empty or diverged run missing without a word.
    (tmp_path / "good").mkdir()
    (tmp_path / "good" / "metrics.jsonl").write_text(
        '{"step": 1, "train/loss": 0.5}\n{"step": 2, "train/loss": 0.4}\n'
    )
    (tmp_path / "diverged").mkdir()
    (tmp_path / "diverged" / "metrics.jsonl").write_text('{"step": 1, "train/loss": NaN}\n')
    assert main([str(tmp_path / "good"), str(tmp_path / "diverged"), "--out", str(tmp_path / "c.png")]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == "warning: diverged logged no finite value of train/loss: it has no line"
    assert "2 runs, train/loss -> " in captured.out


def test_rerunning_with_the_default_out_writes_the_next_free_name(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    # Before, the second run of the same command failed: "compare.png already exists".
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1, "train/loss": 0.5}\n')
    monkeypatch.chdir(tmp_path)
    (tmp_path / "compare.png").write_bytes(b"the last plot")
    assert main([str(tmp_path / "run")]) == 0
    assert main([str(tmp_path / "run")]) == 0
    assert (tmp_path / "compare.png").read_bytes() == b"the last plot"  # never overwritten
    assert (tmp_path / "compare_2.png").is_file() and (tmp_path / "compare_3.png").is_file()
    assert "-> compare_3.png" in capsys.readouterr().out


def logged_run(folder: Path, overrides: list[str] | None = None) -> Path:
    """A run folder as train.py leaves it, with two logged losses (and its overrides, when given)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / "metrics.jsonl").write_text('{"step": 0, "train/loss": 1.0}\n{"step": 1, "train/loss": 0.5}\n')
    if overrides is not None:
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    return folder


def test_an_out_without_an_extension_is_the_png_written_and_never_overwritten(tmp_path: Path, capsys) -> None:
    """Before, --out plot said "-> plot" while matplotlib wrote plot.png, overwriting it on the next run."""
    run = logged_run(tmp_path / "run")
    out = tmp_path / "plot"
    assert main([str(run), "--out", str(out)]) == 0
    assert capsys.readouterr().out.endswith(f"-> {out}.png\n") and not out.exists()
    made = (tmp_path / "plot.png").read_bytes()
    assert main([str(run), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "plot.png").read_bytes() == made


def test_a_sweeps_job_without_logs_is_named_not_silently_left_out(tmp_path: Path, capsys) -> None:
    logged_run(tmp_path / "sweep" / "0")
    (tmp_path / "sweep" / "1" / ".hydra").mkdir(parents=True)  # a job refused before its first step
    assert main([str(tmp_path / "sweep"), "--out", str(tmp_path / "c.png")]) == 0
    shown = capsys.readouterr()
    assert f"warning: {tmp_path / 'sweep'}: run(s) 1 hold no metrics.jsonl" in shown.err
    assert "1 run, train/loss -> " in shown.out


@pytest.mark.parametrize("stored", [": : bad yaml [", "5", b"\xff\xfe"])
def test_an_unreadable_overrides_file_names_the_run_by_its_folder(tmp_path: Path, capsys, stored) -> None:
    """Before: a yaml ParserError traceback, `'int' object is not iterable`, or a codec error naming no file."""
    good, bad = logged_run(tmp_path / "a", ["seed=1"]), logged_run(tmp_path / "b", ["seed=2"])
    overrides = bad / ".hydra" / "overrides.yaml"
    overrides.write_bytes(stored if isinstance(stored, bytes) else stored.encode())
    assert run_labels([good, bad]) == ["a", "b"]
    assert f"warning: {overrides} is not a list of overrides (" in capsys.readouterr().err


def test_the_same_settings_in_two_sweeps_are_labelled_by_folder_and_settings(tmp_path: Path, capsys) -> None:
    """Before: "0" and "other/0", the learning rates that told the lines apart dropped."""
    runs = [
        logged_run(tmp_path / sweep / job, [f"optim.lr={lr}"])
        for sweep in ("sweep", "other")
        for job, lr in (("0", "1e-3"), ("1", "2e-4"))
    ]
    assert run_labels(runs) == [
        "sweep/0: optim.lr=1e-3",
        "sweep/1: optim.lr=2e-4",
        "other/0: optim.lr=1e-3",
        "other/1: optim.lr=2e-4",
    ]
    assert main([*map(str, runs), "--out", str(tmp_path / "c.png")]) == 0
    assert f"other/0: optim.lr=1e-3: {runs[2]}" in capsys.readouterr().out  # which folder each line is
    # One sweep's job whose name is unique is still said with its sweep (before: "1: optim.lr=0.0001" beside
    # "sweep/0: …" and "other/0: …").
    assert run_labels(runs[:3]) == [
        "sweep/0: optim.lr=1e-3",
        "sweep/1: optim.lr=2e-4",
        "other/0: optim.lr=1e-3",
    ]
    # The same value spelled two ways (a sweep hands Hydra's 0.0001, a run's command line said 1e-4) is the same
    # setting: before, "optim.lr=0.0001" and "optim.lr=1e-4" read as two settings, neither said with its folder.
    respelled = [runs[0], runs[1], logged_run(tmp_path / "single", ["optim.lr=0.001"])]
    assert run_labels(respelled) == [
        "sweep/0: optim.lr=1e-3",
        "sweep/1: optim.lr=2e-4",
        "single: optim.lr=0.001",
    ]


def test_each_run_keeps_its_colour_in_a_panel_of_a_metric_another_run_lacks() -> None:
    # Before, matplotlib coloured each panel's lines in turn: the FD panel drew run "b" in run "a"'s colour
    # when "a" logged no FD, and its legend named "a" for it.
    series = {
        "a": {"train/loss": [(0, 0.5), (1, 0.4)]},
        "b": {"train/loss": [(0, 0.6), (1, 0.5)], "val/fd_effl0": [(1, 51.3)]},
    }
    fig, drawn = figure(series, ["train/loss", "val/fd_effl0"])
    assert drawn == ["train/loss", "val/fd_effl0"]
    colors = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            colors.setdefault(line.get_label(), set()).add(to_hex(line.get_color()))
    assert colors.keys() == {"a", "b"}
    assert all(len(seen) == 1 for seen in colors.values()) and colors["a"] != colors["b"]


def tick_labels(ax) -> list[str]:
    """The y tick labels a reader sees (major and minor) within the panel's range."""
    ax.figure.canvas.draw()
    low, high = ax.get_ylim()
    ticks = [*ax.yaxis.get_major_ticks(), *ax.yaxis.get_minor_ticks()]
    return [t.label1.get_text() for t in ticks if t.label1.get_text() and low <= t.get_loc() <= high]


@pytest.mark.parametrize(
    "values",
    [(0.99, 0.96), (1.032, 1.028), (0.99, 0.1), (2.5, 0.03)],
    ids=["narrow", "tiny", "decade", "wide"],
)
def test_loss_panels_label_their_ticks_with_distinct_plain_numbers(values) -> None:
    # Before: ticks at 0.98 and 0.96 both read 1e+00, five ticks of a val/loss near 1.03 all read 1.03, and a
    # loss from 0.99 to 0.1 read 6e-01, 4e-01.
    series = {"a": {"train/loss": [(0, values[0]), (10, (values[0] + values[1]) / 2), (20, values[1])]}}
    fig, _ = figure(series, ["train/loss"])
    labels = tick_labels(fig.axes[0])
    assert len(labels) >= 2, labels
    assert len(set(labels)) == len(labels), labels
    assert not any("e" in label for label in labels), labels


def test_a_sweeps_jobs_are_listed_in_number_order(tmp_path: Path) -> None:
    # Before: 0, 1, 10, 2, … (sorted as text), in the printed list, the legend and the colours.
    for job in range(11):
        folder = tmp_path / "sweep" / str(job)
        (folder / ".hydra").mkdir(parents=True)
        (folder / "metrics.jsonl").write_text('{"step": 1, "train/loss": 0.5}\n')
    assert [run.name for run in find_runs([tmp_path / "sweep"])] == [str(job) for job in range(11)]
