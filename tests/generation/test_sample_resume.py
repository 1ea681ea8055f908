"""A sample.py that is stopped (a cluster's time limit, scancel, Ctrl-C) or killed keeps the images it made, and
resume=true — or the next attempt of a job SLURM requeues — makes only the rest: the finished folder is the one a
run never stopped writes, bit for bit. Before, a stop removed everything, and a 50,000-image job started over."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import LITE_EVAL, ROOT, files_of, one_error_line, run_cli

from difflab.generation.methods import Sampling
from difflab.generation.request import GenerationRequest
from difflab.generation.resume import RECORD, ResumePlan
from difflab.io.results import IN_USE, RESUME_HINT, RUNNING

# 8 batches of 8, slow enough (200 steps) that a stop after the first batch comes before the end.
SET = ["n=64", "batch_size=8", "sampler.steps=200", "cpu_threads=1"]


def started(
    tiny_ckpt: Path, out: Path, *extra: str, env: dict[str, str] | None = None, args: list[str] = SET
) -> subprocess.Popen:
    """sample.py into `out`, once its first batch is on disk (PNGs of the next one are written only after it)."""
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "sample.py"), f"ckpt={tiny_ckpt}", *args, f"out={out}", *extra],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while (
        len(list((out / "images").glob("*.png"))) <= 8
        and time.monotonic() < deadline
        and process.poll() is None
    ):
        time.sleep(0.02)
    assert process.poll() is None, "sample.py ended before it could be stopped"
    return process


@pytest.fixture(scope="module")
def unstopped(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The files of the set made in one go."""
    out = tmp_path_factory.mktemp("unstopped") / "out"
    result = run_cli("sample.py", f"ckpt={tiny_ckpt}", *SET, f"out={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    return files_of(out)


@pytest.mark.parametrize(
    ("stop", "how"), [(signal.SIGTERM, "stopped by SIGTERM"), (signal.SIGINT, "interrupted")]
)
def test_a_stopped_run_keeps_its_images_and_resume_finishes_the_same_set(
    tiny_ckpt: Path, tmp_path: Path, unstopped: dict[str, bytes], stop, how
) -> None:
    out = tmp_path / "out"
    process = started(tiny_ckpt, out)
    process.send_signal(stop)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 128 + stop
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert lines == [f"error: sample.py {how}; what it had made is kept in {out} (unfinished): {RESUME_HINT}"]
    kept = files_of(out)
    assert f"images/{'00000.png'}" in kept and IN_USE in kept and RECORD in kept
    assert "samples.npz" not in kept and "settings.json" not in kept  # nothing says it is a finished set

    again = run_cli("sample.py", f"ckpt={tiny_ckpt}", *SET, f"out={out}")  # without resume=true: refused
    assert "is being written by another run (or holds what a stopped run left" in one_error_line(again)
    assert "resume=true" in one_error_line(again)
    assert files_of(out) == kept

    resumed = run_cli("sample.py", f"ckpt={tiny_ckpt}", *SET, f"out={out}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    said = re.search(
        rf"resuming {out}: (\d+) of 64 images are on disk; making the other (\d+)", resumed.stdout
    )
    assert said, resumed.stdout[-2000:]
    on_disk = int(said[1])
    assert 8 <= on_disk < 64 and on_disk % 8 == 0  # whole batches kept, the rest made
    assert files_of(out) == unstopped


def whole_batches(files: dict[str, bytes], count: int = 64, batch: int = 8) -> dict[str, bytes]:
    """`files` of a stopped set without the PNGs of batches only partly on disk."""
    names = [[f"images/{i:05d}.png" for i in range(k, min(count, k + batch))] for k in range(0, count, batch)]
    partial = {name for span in names if not all(n in files for n in span) for name in span}
    return {name: data for name, data in files.items() if name not in partial}


def test_resume_with_other_settings_is_refused_and_keeps_the_set(tiny_ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = started(tiny_ckpt, out)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    kept = files_of(out)
    other_seed = run_cli("sample.py", f"ckpt={tiny_ckpt}", *SET, f"out={out}", "resume=true", "seed=1")
    assert one_error_line(other_seed) == (
        f"error: cannot resume {out}: it was started with seed=0, this command has seed=1; resume with the "
        "settings it was started with"
    )
    other_sampler = run_cli(
        "sample.py", f"ckpt={tiny_ckpt}", *SET, f"out={out}", "resume=true", "sampler.steps=20"
    )
    assert one_error_line(other_sampler).startswith(
        f"error: cannot resume {out}: it was started with sampler.steps=200, this command has sampler.steps=20;"
    )
    damaged = out / "images" / "00003.png"  # a kept image cut short mid-data since
    damaged.write_bytes(damaged.read_bytes()[:40])
    # The whole batches are kept; a batch the stop cut short (its first PNGs written, the others not) is made
    # anew by any resume, which clears it first: so may this refused one.
    kept = whole_batches(files_of(out))
    cut = run_cli("sample.py", f"ckpt={tiny_ckpt}", *SET, f"out={out}", "resume=true")
    assert one_error_line(cut).startswith(
        f"error: cannot read back {damaged}, an image the unfinished set kept"
    )
    assert whole_batches(files_of(out)) == kept
    for given in (out, out / "images"):  # its scores would be those of part of the set
        scored = run_cli(
            "evaluate.py", f"images={given}", "data=digits", *LITE_EVAL, f"out={tmp_path / 'r.json'}"
        )
        assert one_error_line(scored).startswith(
            f"error: {given} is unfinished ({IN_USE}: a sample.py is writing"
        )
    assert whole_batches(files_of(out)) == kept


def test_resume_is_refused_a_folder_whose_run_is_still_going(tiny_ckpt: Path, tmp_path: Path) -> None:
    """The running sample.py holds a lock on its mark (the system lets go of it however the process ends), so
    resume=true given too soon is refused instead of writing the same folder twice."""
    out, long = tmp_path / "out", ["n=1000", *SET[1:]]  # ~60 s here: still going when the second one asks
    running = started(tiny_ckpt, out, args=long)
    too_soon = run_cli("sample.py", f"ckpt={tiny_ckpt}", *long, f"out={out}", "resume=true")
    assert one_error_line(too_soon) == f"error: {RUNNING.format(folder=out)}"
    assert running.poll() is None, "the run ended before the second one asked"
    running.send_signal(signal.SIGTERM)  # and it is not disturbed: it keeps what it made, as any stopped run
    _, stderr = running.communicate(timeout=60)
    assert f"what it had made is kept in {out} (unfinished)" in stderr


def test_a_requeued_slurm_job_finishes_the_set_its_killed_attempt_left(
    tiny_ckpt: Path, tmp_path: Path, unstopped: dict[str, bytes]
) -> None:
    """Killed outright (SIGKILL: a node failure, the out-of-memory killer), the first attempt leaves its PNGs and
    perhaps a half-written temp file; the requeued attempt (SLURM_RESTART_COUNT=1) resumes without being asked."""
    out = tmp_path / "out"
    job = {"SLURM_JOB_ID": "4242", "SLURM_RESTART_COUNT": "0"}
    process = started(tiny_ckpt, out, env=job)
    process.kill()
    process.communicate(timeout=60)
    assert (out / IN_USE).read_text() == "slurm 4242\n0"
    requeued = run_cli(
        "sample.py", f"ckpt={tiny_ckpt}", *SET, f"out={out}", env={**job, "SLURM_RESTART_COUNT": "1"}
    )
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    assert f"resuming {out}: " in requeued.stdout
    assert files_of(out) == unstopped


def test_a_requeued_job_finishes_the_set_in_the_dated_folder_its_stopped_attempt_took(
    tiny_ckpt: Path, tmp_path: Path, unstopped: dict[str, bytes]
) -> None:
    """Without out=, each run takes a new outputs/sample/<date>/<time>; the requeued attempt goes back into the
    one its stopped attempt took instead."""
    job = {"SLURM_JOB_ID": "4244", "SLURM_RESTART_COUNT": "0", "DIFFLAB_ROOT": str(tmp_path)}
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "sample.py"), f"ckpt={tiny_ckpt}", *SET],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1", **job},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("outputs/sample/*/*/images/*.png"))) <= 8 and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)  # preempted: SLURM's SIGTERM, then the requeue
    _, stderr = process.communicate(timeout=60)
    (out,) = tmp_path.glob("outputs/sample/*/*")
    hint = f"run the same command with out={out} resume=true to finish it"  # the same command would date anew
    assert f"what it had made is kept in {out} (unfinished): {hint}" in stderr
    time.sleep(1.1)  # a new dated folder would have another name
    requeued = run_cli("sample.py", f"ckpt={tiny_ckpt}", *SET, env={**job, "SLURM_RESTART_COUNT": "1"})
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    assert f"resuming {out}: " in requeued.stdout
    assert list(tmp_path.glob("outputs/sample/*/*")) == [out]
    assert files_of(out) == unstopped


def test_a_requeued_job_whose_checkpoint_changed_makes_the_set_anew(
    tiny_ckpt: Path, tmp_path: Path, unstopped: dict[str, bytes]
) -> None:
    out = tmp_path / "out"
    job = {"SLURM_JOB_ID": "4243", "SLURM_RESTART_COUNT": "0"}
    process = started(tiny_ckpt, out, env=job)
    process.kill()
    process.communicate(timeout=60)
    record = json.loads((out / RECORD).read_text())
    record["identity"]["model"] = "weights of another training step"
    (out / RECORD).write_text(json.dumps(record))
    requeued = run_cli(
        "sample.py", f"ckpt={tiny_ckpt}", *SET, f"out={out}", env={**job, "SLURM_RESTART_COUNT": "1"}
    )
    assert requeued.returncode == 0, requeued.stderr[-2000:]
    assert (
        "what an earlier attempt of this job left there is removed (it was started with model=weights of "
        in (requeued.stdout)
    )
    assert files_of(out) == unstopped


@pytest.mark.parametrize(
    "damage", [{"batch_size": -1}, {"batch_size": 0}, {"batch_size": True}, {"cpu_threads": 0}]
)
def test_a_damaged_record_is_refused_in_one_line_and_the_images_stay(
    tiny_ckpt: Path, tmp_path: Path, damage: dict
) -> None:
    # Before, a record with batch_size -1 emptied images/ and ended in a traceback (KeyError: 0); 0 ended in a
    # ZeroDivisionError; cpu_threads 0 reached torch.set_num_threads.
    out = tmp_path / "out"
    process = started(tiny_ckpt, out)
    process.kill()
    process.communicate(timeout=60)
    (out / RECORD).write_text(json.dumps({**json.loads((out / RECORD).read_text()), **damage}))
    before = files_of(out)
    resumed = run_cli("sample.py", f"ckpt={tiny_ckpt}", *SET, f"out={out}", "resume=true")
    assert one_error_line(resumed) == f"error: cannot resume {out}: its record ({RECORD}) is damaged"
    assert files_of(out) == before


def test_resume_needs_an_out_folder_and_one_a_stopped_run_left(tiny_ckpt: Path, tmp_path: Path) -> None:
    no_out = run_cli("sample.py", f"ckpt={tiny_ckpt}", "resume=true")
    assert one_error_line(no_out) == "error: resume=true needs out=<the folder a stopped sample.py left>"
    finished = tmp_path / "finished"
    first = run_cli(
        "sample.py", f"ckpt={tiny_ckpt}", "n=4", "sampler.steps=2", f"out={finished}", "resume=true"
    )
    assert first.returncode == 0, first.stderr[-2000:]  # nothing to resume yet: made whole
    before = files_of(finished)
    assert RECORD not in before and IN_USE not in before
    again = run_cli(
        "sample.py", f"ckpt={tiny_ckpt}", "n=4", "sampler.steps=2", f"out={finished}", "resume=true"
    )
    assert one_error_line(again) == (
        f"error: output folder {finished} already exists and is not empty (a finished run: nothing to resume); "
        "choose another out="
    )
    assert files_of(finished) == before
    notes = tmp_path / "notes"  # a folder no run wrote: before, it too was "a finished run"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    elsewhere = run_cli("sample.py", f"ckpt={tiny_ckpt}", f"out={notes}", "resume=true")
    assert one_error_line(elsewhere) == (
        f"error: output folder {notes} already exists and is not empty (neither a stopped nor a finished run's "
        f"output: it has no {IN_USE} mark, nothing to resume); choose another out="
    )
    assert files_of(notes) == {"todo.txt": b"keep me"}
    typo = run_cli("sample.py", f"ckpt={tiny_ckpt}", f"out={tmp_path / 'x'}", "resume=yes")
    assert "resume" in one_error_line(typo) and "true or false" in one_error_line(typo)


def test_a_continued_set_is_made_in_the_batches_and_threads_it_was_started_with(monkeypatch) -> None:
    """Batch 1 of 3 (batch size 4) is on disk: the rest is made as batches 0 and 2 were first cut, on the CPU
    threads auto chose then (a measured choice could differ now); batch_size=N, cpu_threads=N and OMP_NUM_THREADS
    still win."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    plan = ResumePlan(10, batch_size=4, done=frozenset({1}), cpu_threads=2)
    asked = GenerationRequest(Sampling(None, (1, 8, 8)), range(10), batch_size="auto", cpu_threads="auto")
    applied = plan.applied(asked)
    assert list(applied.indices) == [0, 1, 2, 3, 8, 9]
    assert (applied.batch_size, applied.cpu_threads) == (4, 2)
    assert plan.applied(replace(asked, cpu_threads=1)).cpu_threads == 1
    assert plan.applied(replace(asked, batch_size=3)).batch_size == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert plan.applied(asked).cpu_threads == "auto"
    made = iter(
        [torch.zeros(4, 1, 8, 8), torch.ones(2, 1, 8, 8)]
    )  # batches 0 and 2, as generation yields them
    read_back = lambda first, count: torch.full((count, 1, 8, 8), 0.5)  # noqa: E731
    order = [(len(images), on_disk) for images, on_disk in plan.in_index_order(made, read_back)]
    assert order == [(4, False), (4, True), (2, False)]


def test_a_set_resumes_in_the_smaller_batches_a_command_gives(
    tiny_ckpt: Path, tmp_path: Path, unstopped: dict[str, bytes]
) -> None:
    """A job requeued onto a smaller GPU, out of memory in the batches it was started with, finishes its set with
    batch_size=<fewer>: the kept images stay as they are, the others start from the same noise."""
    out = tmp_path / "out"
    process = started(tiny_ckpt, out)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    kept = whole_batches(files_of(out))
    smaller = [a if not a.startswith("batch_size=") else "batch_size=3" for a in SET]
    resumed = run_cli("sample.py", f"ckpt={tiny_ckpt}", *smaller, f"out={out}", "resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    line = re.search(
        r"resuming .* images are on disk; making the other (\d+) in batches of 3, not 8 as it was",
        resumed.stdout,
    )
    assert line is not None, resumed.stdout[-2000:]
    finished = files_of(out)
    assert sorted(finished) == sorted(unstopped)
    assert all(finished[name] == data for name, data in kept.items() if name.startswith("images/"))
    images, expected = (
        np.load(io.BytesIO(files["samples.npz"]))["images"] for files in (finished, unstopped)
    )
    assert np.abs(images.astype(int) - expected.astype(int)).max() <= 1  # the same noise; rounding at most


def test_a_resume_with_another_model_names_the_model_not_the_sampler_values_it_sets() -> None:
    # Before, an EDM checkpoint given to resume a flow model's set was named as "sampler.timestep_spacing=trailing,
    # this command has sampler.timestep_spacing=karras": a value the user never typed, set by the model.
    from types import SimpleNamespace

    import torch

    from difflab.generation.set_identity import changed_setting, set_identity
    from difflab.sample_options import SampleOptions

    options = SampleOptions(
        mode="sample", n=4, seed=0, batch_size=2, precision="fp32", cpu_threads=1, guidance=1.0
    )
    flow = SimpleNamespace(config={"formulation": "flow"}, net=torch.nn.Linear(2, 2))
    edm = SimpleNamespace(config={"formulation": "edm"}, net=torch.nn.Linear(2, 2))
    was = set_identity(options, {"steps": 10, "timestep_spacing": "trailing"}, flow)
    now = set_identity(options, {"steps": 10, "timestep_spacing": "karras"}, edm)
    assert changed_setting(was, now).startswith("it was started with model=weights ")
