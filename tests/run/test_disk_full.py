"""A disk that fills up (or a run folder that stops taking writes): one line naming the file and "no space left", no partial file, the last good checkpoint
named, and a rerun that is not blocked by anything the failure left."""

from __future__ import annotations

import contextlib
import errno
import json
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import CLI_FAST, FAST_TRAIN, compose_config, one_error_line, run_cli

from difflab.io.atomic import NoSpaceLeft, atomic_file
from difflab.io.results import output_folder, write_json


def leftovers(folder: Path) -> list[str]:
    """Empty or temporary result files: what a failed write must not leave (a log may be empty: its lines
    had no room either)."""
    return sorted(
        str(p)
        for p in folder.rglob("*")
        if p.is_file() and p.suffix != ".log" and (p.stat().st_size == 0 or ".tmp" in p.name)
    )


def test_a_failed_atomic_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "last.ckpt"
    target.write_bytes(b"previous")
    with (
        pytest.raises(NoSpaceLeft, match=f"no space left on device writing {target}"),
        atomic_file(target) as f,
    ):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_an_exclusive_write_never_replaces_a_file(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("{}")
    with pytest.raises(FileExistsError), atomic_file(target, "w", exclusive=True) as f:
        f.write("new")
    assert target.read_text() == "{}" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


@pytest.mark.slow
def test_training_on_a_disk_that_fills_names_the_file_and_the_last_good_checkpoint(small_disk):
    run = small_disk("7m") / "run"  # room for the step-2 checkpoint and last.ckpt (2.8 MB each), not step 4's
    result = run_cli("train.py", *CLI_FAST, "trainer.max_steps=6", f"hydra.run.dir={run}")
    checkpoints = run / "checkpoints"
    assert one_error_line(result) == (
        f"error: no space left on device writing {checkpoints / 'step_0000004.ckpt'}; nothing partial was left; "
        f"the last good checkpoint is {checkpoints / 'last.ckpt'}: free some space and resume with "
        f"ckpt_path=last hydra.run.dir={run}"
    )
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 2
    assert leftovers(run) == []


def test_a_run_folder_that_stops_taking_writes_names_it_and_the_last_good_checkpoint(tmp_path, monkeypatch):
    """Its checkpoints/ made read-only mid-run (or its file system remounted so): before, a Lightning traceback
    ending in PermissionError, with no word of the checkpoint that holds step 2."""
    import difflab.training.atomic_checkpoint_io as checkpoint_io
    from difflab.run.train import train

    save = checkpoint_io.atomic_torch_save

    def refused_from_step_4(obj, target: Path) -> None:
        if target.name == "step_0000004.ckpt":  # what the OS gives for the temp file beside it
            raise PermissionError(
                errno.EACCES, "Permission denied", str(target.with_name(".step_4.0123.tmp"))
            )
        save(obj, target)

    monkeypatch.setattr(checkpoint_io, "atomic_torch_save", refused_from_step_4)
    run = tmp_path / "run"
    with pytest.raises(ValueError) as error:
        train(compose_config("train", FAST_TRAIN, run))
    checkpoints = run / "checkpoints"
    assert str(error.value) == (
        f"Permission denied in {checkpoints}; the last good checkpoint is {checkpoints / 'last.ckpt'}: once "
        f"{checkpoints} can be written again, resume with ckpt_path=last hydra.run.dir={run}"
    )
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 2


def test_an_output_folder_that_stops_taking_writes_keeps_what_was_made_in_one_line(tmp_path):
    """sample.py's images/ made read-only mid-run: before, a PermissionError traceback, then a second one from
    emptying the folder. (Faked: root, as tests may run, writes anywhere.)"""
    out = tmp_path / "made_some"
    with pytest.raises(ValueError) as error, output_folder(out, "sample") as folder:
        (folder.path / "images").mkdir()
        (folder.path / "images" / "00000.png").write_bytes(b"a picture")
        raise PermissionError(
            errno.EACCES, "Permission denied", str(folder.path / "images" / ".00001.png.0.tmp")
        )
    assert str(error.value) == (
        f"Permission denied in {out / 'images'}; what it had made is kept in {out} (unfinished): once it can be "
        "written again, run the same command with resume=true to finish it"
    )
    assert (out / "images" / "00000.png").is_file() and (out / ".difflab-writing").is_file()

    out = tmp_path / "made_none"
    with pytest.raises(ValueError) as error, output_folder(out, "sample") as folder:
        raise PermissionError(errno.EROFS, "Read-only file system", str(folder.path / ".grid.png.0.tmp"))
    assert str(error.value) == f"Read-only file system in {out}; nothing was made yet"
    assert not out.exists()


def test_a_disk_that_fills_before_the_first_checkpoint_says_how_to_start_over(small_disk):
    # Before: "; no checkpoint was written yet", and the same command, rerun once space was freed, was refused
    # ("already holds a run that wrote no checkpoint").
    run = small_disk("2m") / "run"  # room to start (over 1 MiB), not for the first checkpoint (2.8 MB)
    line = one_error_line(run_cli("train.py", *CLI_FAST, "trainer.max_steps=2", f"hydra.run.dir={run}"))
    assert line.startswith(f"error: no space left on device writing {run / 'checkpoints'}/"), line
    assert line.endswith(
        f"; nothing partial was left; no checkpoint was written yet: free some space and start over in a new "
        f"hydra.run.dir (or remove {run} first)"
    ), line


def test_training_on_a_full_disk_is_refused_in_one_line_before_its_folder_is_made(small_disk):
    # Before, Hydra's write of .hydra/config.yaml ended in a traceback, and the folder it left (.hydra, a lock)
    # refused the same command once space was freed: "already holds a run that wrote no checkpoint".
    disk = small_disk("64k")
    with contextlib.suppress(OSError), (disk / "filler").open("wb", buffering=0) as filler:
        while True:
            filler.write(b"\0" * 4096)
    run = disk / "run"
    line = one_error_line(run_cli("train.py", *CLI_FAST, f"hydra.run.dir={run}"))
    assert line.startswith(f"error: no space left on device for the run folder {run}: ")
    assert line.endswith("KiB free on its disk; free some space or pick another hydra.run.dir")
    assert not run.exists()


@pytest.mark.slow
def test_sampling_onto_a_full_disk_leaves_no_empty_png(small_disk, tiny_ckpt):
    out = small_disk("64k") / "samples"
    line = one_error_line(run_cli("sample.py", f"ckpt={tiny_ckpt}", "n=100", "sampler.steps=2", f"out={out}"))
    # the first file that does not fit: a PNG, or samples.npz when PNG writers write the PNGs a batch later
    assert line.startswith(
        (
            f"error: no space left on device writing {out / 'images'}",
            f"error: no space left on device writing {out / 'samples.npz'}",
        )
    )
    assert "; nothing partial was left; what it had made is kept in" in line
    # the empty mark that keeps the folder unfinished (for resume=true) is the only empty file
    assert leftovers(out) == [str(out / ".difflab-writing")]


@pytest.mark.slow
def test_sampling_stopped_by_a_full_disk_keeps_its_batches_and_resumes_once_space_is_freed(
    small_disk, tiny_ckpt
):
    # Before, every image made was deleted with the error: a resume after freeing space had nothing to go on from.
    disk = small_disk(
        "400k"
    )  # a tmpfs file takes 4 KiB: the first batch of 64 PNGs fits, the second does not
    out, whole = disk / "samples", disk.parent / "whole"
    sample = ["sample.py", f"ckpt={tiny_ckpt}", "n=200", "batch_size=64", "sampler.steps=2"]
    line = one_error_line(run_cli(*sample, f"out={out}"))
    assert line.startswith(f"error: no space left on device writing {out}/")
    assert line.endswith(
        f"what it had made is kept in {out} (unfinished): run the same command with resume=true to finish it"
    )
    subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
    resumed = run_cli(*sample, f"out={out}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resuming {out}: 64 of 200 images are on disk" in resumed.stdout + resumed.stderr
    assert run_cli(*sample, f"out={whole}").returncode == 0
    made = sorted(p.name for p in (whole / "images").iterdir())
    assert sorted(p.name for p in (out / "images").iterdir()) == made and len(made) == 200
    for name in made:
        assert (out / "images" / name).read_bytes() == (whole / "images" / name).read_bytes(), name


def test_a_report_that_does_not_fit_is_printed_and_leaves_no_file(small_disk, capsys):
    disk = small_disk("4k")
    (disk / "filler").write_bytes(b"x" * 4096)
    path = disk / "metrics.json"
    report = {"val/fd_effl0": 3.48, "n": 1000}
    with pytest.raises(NoSpaceLeft, match=f"no space left on device writing {path}"):
        write_json(report, path)
    assert json.loads(capsys.readouterr().out) == report
    assert not path.exists() and leftovers(disk) == []
    (disk / "filler").unlink()
    write_json(report, path)  # the rerun is not blocked by an empty file
    assert json.loads(path.read_text()) == report


def test_a_full_disk_refuses_a_restartable_jobs_output_folder_in_one_line_and_leaves_nothing(small_disk):
    """The folder's mark names the job and attempt (a few bytes): on a full disk, one line and no empty mark or
    folder left behind to refuse the next run."""
    disk = small_disk("64k")
    with contextlib.suppress(OSError), (disk / "filler").open("wb", buffering=0) as filler:
        while True:
            filler.write(b"\0" * 4096)
    out = disk / "out"
    folder = output_folder(out, "sample", attempt=("torchrun job-a", 0))
    with pytest.raises(NoSpaceLeft, match=r"^no space left on device writing .*out/\.difflab-writing"):
        folder.__enter__()
    assert not out.exists()


@pytest.mark.parametrize("format", ["safetensors", "diffusers"])
def test_an_export_onto_a_full_disk_is_one_line_and_leaves_no_folder(small_disk, tiny_ckpt, format):
    # Before: Hydra's "Error executing job", then safetensors' traceback ("I/O error: No space left on device
    # (os error 28)"), exit code 1.
    out = small_disk("300k") / "export"
    result = run_cli("export.py", f"ckpt={tiny_ckpt}", f"format={format}", f"out={out}")
    assert result.returncode == 2
    assert one_error_line(result) == f"error: no space left on device writing {out}; nothing partial was left"
    assert not out.exists()
