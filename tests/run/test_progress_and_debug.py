"""What a researcher sees: progress lines in a log file (no terminal), the run folder's train.log holding what the
console showed, short runs with a loss curve, and the debug configs running."""

from __future__ import annotations

import json
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CLI_FAST, FAST_TRAIN, TINY_AE, compose_config, run_cli
from omegaconf import OmegaConf
from PIL import Image

from difflab.progress import Progress
from difflab.run.errors import exit_on_user_error
from difflab.run.train import train
from difflab.runlogs import run_series
from difflab.training.console import config_summary, print_summary


@pytest.fixture
def run_log(tmp_path: Path) -> Iterator[Path]:
    """A log file on the root logger, as Hydra's job logging sets up <run>/train.log."""
    path = tmp_path / "train.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    logging.getLogger().addHandler(handler)
    yield path
    logging.getLogger().removeHandler(handler)
    handler.close()


def test_a_run_logged_to_a_file_shows_steps_rate_eta_and_loss(tmp_path: Path, tiny_ckpt: Path) -> None:
    fast = [o for o in FAST_TRAIN if not o.startswith("trainer.enable_progress_bar")]
    result = run_cli(
        "train.py", *fast, "trainer.max_steps=3", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("train: ")]
    assert lines and re.match(r"train: 3/3 steps · [\d.]+ steps/s · ETA 0:00 · train/loss [\d.]+", lines[-1])
    assert "difflab train" in result.stdout and "parameters" in result.stdout  # the summary at start
    assert "Tip" not in result.stderr + result.stdout and "anonymous" not in result.stderr + result.stdout

    out = tmp_path / "samples"
    result = run_cli("sample.py", f"ckpt={tiny_ckpt}", "n=4", "batch_size=2", "sampler.steps=3", f"out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"sampling 4 images: 6/6 steps · [\d.]+ steps/s · [\d.]+ images/s", result.stdout), (
        result.stdout
    )


def test_the_last_line_shows_the_last_validations_loss(tmp_path: Path) -> None:
    # Helper report: the line at the last step was printed before that step's validation, so the run ended on the
    # validation loss of the step before (val/loss 1.026 of step 20, where step 30 logged 1.020).
    fast = [o for o in FAST_TRAIN if not o.startswith(("trainer.enable_progress_bar", "trainer.max_steps"))]
    run = tmp_path / "run"
    result = run_cli("train.py", *fast, "trainer.max_steps=4", "logger=none", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-2000:]
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [row for row in logged if "val/loss" in row][-1]
    assert last["step"] == 4
    lines = [line for line in result.stdout.splitlines() if line.startswith("train: 4/4 steps")]
    assert len(lines) == 1 and lines[0].endswith(f"val/loss {last['val/loss']:.4g}"), lines


def test_the_run_folders_log_holds_everything_the_console_showed(tmp_path: Path) -> None:
    pictures = tmp_path / "pictures"  # a folder smaller than a batch: training warns that it is repeated
    pictures.mkdir()
    for i in range(10):
        Image.new("L", (8, 8), 20 * i).save(pictures / f"{i}.png")
    fast = [o for o in FAST_TRAIN if not o.startswith("trainer.enable_progress_bar")]
    data = [
        "data=folder",
        f"data.root={pictures}",
        "data.image_size=8",
        "data.channels=1",
        "data.num_workers=0",
    ]
    run = tmp_path / "run"
    result = run_cli("train.py", *fast, *data, "trainer.max_steps=3", "logger=csv", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-2000:]
    log = (run / "train.log").read_text()
    shown = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert [line for line in shown if line not in log] == []
    # what the console showed: the summary, progress lines, the data's warning, Lightning's own messages
    for text in ("difflab train", "parameters", "train: 3/3 steps", "repeated", "`Trainer.fit` stopped"):
        assert text in log
    assert "\r" not in log


def test_a_live_bar_and_a_panel_keep_plain_lines_in_the_run_log(run_log: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # a terminal: rich panel and live bar
    print_summary("difflab train", "  data=digits             dataset=digits")
    with Progress("train", 3, "steps", live=True) as progress:
        for _ in range(3):
            progress.advance(loss=0.5)
    log = run_log.read_text()
    assert "difflab train\n  data=digits             dataset=digits" in log
    assert re.search(r"train: 3/3 steps · [\d.]+ steps/s · ETA 0:00 · loss 0.5", log), log


def test_an_error_line_and_a_bugs_traceback_are_kept_in_the_run_log(run_log: Path, capsys) -> None:
    @exit_on_user_error
    def bad_input() -> None:
        raise ValueError("image size 18 cannot be divided down")

    @exit_on_user_error
    def bug() -> None:
        raise RuntimeError("shape mismatch")

    with pytest.raises(SystemExit):
        bad_input()
    with pytest.raises(RuntimeError):
        bug()
    log = run_log.read_text()
    assert "error: image size 18 cannot be divided down" in log
    assert "Traceback" in log and "RuntimeError: shape mismatch" in log
    assert capsys.readouterr().err == "error: image size 18 cannot be divided down\n"  # the console as before


@pytest.mark.parametrize(
    ("overrides", "points"),
    [
        ([], 10),  # 20 steps at the default log_every_n_steps=50: a curve all the same
        (
            ["data.batch_size=512", "trainer.log_every_n_steps=4", "trainer.max_steps=40"],
            10,
        ),  # 4-batch epochs
    ],
)
def test_every_run_however_short_logs_its_loss_curve(
    tmp_path: Path, overrides: list[str], points: int
) -> None:
    keep = ("trainer.log_every_n_steps", "data.batch_size", "trainer.val_check_interval")
    fast = [o for o in FAST_TRAIN if not o.startswith(keep)]
    quiet = ["callbacks.sample_grid=null", "callbacks.model_checkpoint=null", "trainer.max_steps=20"]
    cfg = compose_config("train", [*fast, *quiet, *overrides], tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg)
    assert len(run_series(tmp_path / "run")["train/loss"]) >= points
    assert not [w for w in caught if "logging interval" in str(w.message)]  # logs count steps, not epochs


@pytest.mark.parametrize("debug", ["default", "overfit", "fdr", "profile"])
def test_debug_configs_run_on_the_cpu_and_keep_no_checkpoints(debug: str, tmp_path: Path, caplog) -> None:
    cfg = compose_config(
        "train", [f"debug={debug}", "trainer.max_steps=5", "model=unet_tiny"], tmp_path / "run"
    )
    assert cfg.trainer.accelerator == "cpu" and cfg.callbacks.get("model_checkpoint") is None
    with caplog.at_level(logging.INFO, logger="difflab"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train(cfg)
    assert metrics["train/loss"] > 0
    assert list((tmp_path / "run").rglob("*.ckpt")) == []
    # debug=overfit turns shuffling off itself: Lightning's warning that it does so is noise
    assert not [w for w in caught if "shuffling" in str(w.message)]
    # the closing lines name only folders the run made
    named = [re.match(r"(checkpoints|sample grids): (\S+)", r.getMessage()) for r in caplog.records]
    assert all(Path(m[2]).is_dir() for m in named if m)


def test_the_fast_dev_run_summary_says_what_runs(tmp_path: Path) -> None:
    cfg = compose_config("train", ["debug=fdr"], tmp_path / "run")
    config = OmegaConf.to_container(cfg, resolve=True)
    (line,) = [line for line in config_summary(config, {"trainer": "cpu"}).splitlines() if "trainer=" in line]
    assert "fast_dev_run=True" in line and "max_steps" not in line  # Lightning runs one batch, not 10 steps


@pytest.mark.parametrize(
    ("overrides", "shown", "hidden"),
    [
        (
            ["trainer.max_epochs=1"],
            "max_steps=5000, max_epochs=1",
            None,
        ),  # whichever comes first ends the run
        ([], "max_steps=5000", "max_epochs"),  # -1: no epoch limit, not shown
        (["trainer.max_steps=-1", "trainer.max_epochs=2"], "max_epochs=2", "max_steps"),
        # Before, neither limit was shown: a run with none trains until stopped, one with max_epochs=null for
        # Lightning's 1000 epochs, each without a word.
        (
            ["trainer.max_steps=-1", "trainer.max_epochs=-1"],
            "no step or epoch limit (trains until stopped; Ctrl-C or SIGTERM saves last.ckpt)",
            None,
        ),
        (["trainer.max_steps=-1", "trainer.max_epochs=null"], "max_epochs=1000 (Lightning's default)", None),
    ],
)
def test_the_summary_shows_the_limits_that_end_the_run(tmp_path: Path, overrides, shown, hidden) -> None:
    # Before, trainer.max_epochs=1 was not shown: the summary read max_steps=5000 for a 26-step run.
    cfg = compose_config("train", overrides, tmp_path / "run")
    config = OmegaConf.to_container(cfg, resolve=True)
    (line,) = [
        line for line in config_summary(config, {"trainer": "default"}).splitlines() if "trainer=" in line
    ]
    assert shown in line and (hidden is None or hidden not in line), line


def test_the_bar_counts_to_the_step_the_run_ends_at(capsys) -> None:
    # Before, trainer.max_epochs=1 on a 26-step epoch ended with "train: 26/3000 steps · … · ETA 4:18".
    from types import SimpleNamespace

    from difflab.callbacks.progress_bar import StepProgressBar

    bar = StepProgressBar(every_n_seconds=1000.0)
    trainer = SimpleNamespace(
        is_global_zero=True, max_steps=3000, estimated_stepping_batches=26, global_step=0
    )
    bar.on_train_start(trainer, None)
    assert bar._progress.total == 26
    bar._close()


def test_a_profile_times_training_and_keeps_its_report_in_the_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    overrides = ["debug=profile", "model=unet_tiny", "trainer.max_steps=3", "data.batch_size=16"]
    result = run_cli("train.py", *overrides, f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-2000:]
    log = (run / "train.log").read_text()
    assert "Profiler Report" in log and "run_training_batch" in log
    assert "SampleGrid" not in log  # sample grids every few steps would take half the time profiled


def test_the_summary_names_the_formulation_and_hides_a_schedule_it_does_not_use(tmp_path: Path) -> None:
    lines = {}
    for formulation in ("vp", "flow"):
        cfg = compose_config("train", [f"formulation={formulation}"], tmp_path / formulation)
        config = OmegaConf.to_container(cfg, resolve=True)
        lines[formulation] = config_summary(config, {"formulation": formulation, "schedule": "linear"})
    assert "formulation=flow" in lines["flow"] and "t_sampling=logit_normal" in lines["flow"]
    assert "schedule=" not in lines["flow"]  # flow's noise levels are its own, not the linear table's
    assert "formulation=vp" in lines["vp"] and "schedule=linear" in lines["vp"]


def test_an_autoencoder_runs_summary_lists_no_schedule_or_sampler(tmp_path: Path) -> None:
    # Before, it listed schedule=linear and sampler=ddim, which an autoencoder run never reads.
    cfg = compose_config("train", TINY_AE, tmp_path)
    summary = config_summary(OmegaConf.to_container(cfg, resolve=True), {"model": "autoencoder_kl_f4"})
    assert "model=autoencoder_kl_f4" in summary
    assert not [
        line
        for line in summary.splitlines()
        if line.split()[0].startswith(("schedule", "sampler", "formulation"))
    ]


@pytest.mark.parametrize(
    "steps_per_s,images", [(334.79, "1004"), (40000.0, "120000"), (2.5, "7.5"), (0.01, "0.03")]
)
def test_the_images_rate_is_written_as_a_plain_number_however_fast(steps_per_s, images, monkeypatch) -> None:
    from difflab import progress

    bar = progress.Progress("sampling", total=10, unit="steps", live=False, per_unit=("images", 3))
    monkeypatch.setattr(progress.Progress, "rate", lambda self: steps_per_s)
    assert bar.rates() == f"{steps_per_s:.2f} steps/s · {images} images/s"


def test_a_stop_shows_the_step_it_saved_as_the_bars_last_count(capsys) -> None:
    # A stop raises in the step's on_train_batch_end before the bar's: its last line said 176/2000 beside
    # "saved … at step 177".
    from types import SimpleNamespace

    from difflab.callbacks.progress_bar import StepProgressBar

    bar = StepProgressBar(every_n_seconds=1000.0)
    bar._progress = Progress(
        "train", 2000, "steps", start=170, every_n_seconds=1000.0, live=False
    ).__enter__()
    bar._progress.update(176)
    bar.on_exception(SimpleNamespace(global_step=177), None, KeyboardInterrupt())
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("train: ")]
    assert lines[-1].startswith("train: 177/2000 steps"), lines


def test_compiling_on_a_machine_without_cuda_prints_no_cuda_line(caplog) -> None:
    # compile=true|regional on a CPU: torch's extension loader warned "No CUDA runtime is found" in the middle of
    # the run's output, about a runtime the CPU compile never needs.
    from difflab.training.console import quiet_library_noise

    quiet_library_noise()
    with caplog.at_level(logging.WARNING):
        logging.getLogger("torch.utils.cpp_extension").warning(
            "No CUDA runtime is found, using CUDA_HOME='/usr'"
        )
        logging.getLogger("torch.utils.cpp_extension").warning("another warning of that logger")
    assert "No CUDA runtime" not in caplog.text and "another warning" in caplog.text


def test_difflabs_own_warnings_show_their_message_not_its_source_line(tmp_path: Path) -> None:
    # Before: ".../difflab/data/sources.py:138: UnreadableImagesWarning: skipped …" and then the code line
    # "  warn_skipped(skipped)  # one warning for the whole tree…", in the console and in train.log.
    from PIL import Image

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i in range(12):
        Image.new("L", (8, 8), 20 * i).save(pictures / f"{i}.png")
    (pictures / "junk.png").write_bytes(b"junk")
    run = tmp_path / "run"
    overrides = [o for o in CLI_FAST if not o.startswith("trainer.max_steps")]
    result = run_cli(
        "train.py", *overrides, "trainer.max_steps=1", "data=folder", f"data.root={pictures}", "data.channels=1",
        "data.image_size=8", "callbacks.sample_grid.every_n_steps=0", f"hydra.run.dir={run}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    shown = result.stdout + result.stderr
    assert "warning: UnreadableImagesWarning: skipped 1 unreadable image file(s): " in shown
    assert "warn_skipped(" not in shown and "sources.py:" not in shown
    assert "[WARNING] - warning: UnreadableImagesWarning: skipped 1" in (run / "train.log").read_text()


@pytest.mark.slow  # Lite0 features of the digits' reference split and of the samples: about 15 s
def test_the_fid_evaluation_at_the_end_of_training_reports_its_progress(tmp_path: Path) -> None:
    """It runs after training's bar has closed (callbacks=[default,fid] puts it last). Before, it said nothing:
    with the default 1,000 samples, minutes of silence between 'Trainer.fit stopped' and the scores."""
    fast = [o for o in FAST_TRAIN if not o.startswith("trainer.enable_progress_bar")]
    fid = ["callbacks=[default,fid]", "callbacks.fid.every_n_steps=0", "callbacks.fid.at_train_end=true"]
    fid += ["callbacks.fid.num_samples=6", "callbacks.fid.best_checkpoint=null", "metrics.prc=false"]
    fid += [
        "metrics.num_reference=40",
        "metrics.kid_subset_size=5",
        f"metrics.cache_dir={tmp_path / 'cache'}",
    ]
    result = run_cli(
        "train.py", *fast, *fid, "trainer.max_steps=2", "logger=none", f"hydra.run.dir={tmp_path / 'run'}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"^scoring 6 samples: 2/2 steps · ", result.stdout, re.MULTILINE), result.stdout[-3000:]
