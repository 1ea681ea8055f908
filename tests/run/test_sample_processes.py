"""sample.py and evaluate.py started by torchrun as several processes (2 CPU processes over gloo here): they share
the batches and rank 0 writes the very files, and scores, one process writes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from conftest import LITE_EVAL, ROOT, TORCHRUN, files_of, rank_pid, run_cli, run_torchrun
from PIL import Image

from difflab.cluster.processes import Processes, device_of, started_processes
from difflab.generation.shares import RoundShare
from difflab.io.results import IN_USE, RESUME_HINT, output_folder


def torchrun(*args: str, script: str = "sample.py", timeout: int = 300) -> subprocess.CompletedProcess:
    return run_torchrun(script, *args, timeout=timeout)


def test_rounds_give_every_position_to_one_process_and_rank_0_receives_them_in_order():
    count, batch, world = 23, 4, 3
    shares = [list(RoundShare(range(count), batch, Processes(rank, world))) for rank in range(world)]
    assert sorted(p for share in shares for p in share) == list(range(count))
    # Round r: process k's batch r; put side by side they are the round's positions in order.
    received = []
    for r in range(2):
        for share in shares:
            received.extend(share[r * batch : (r + 1) * batch])
    assert received == list(range(count))
    assert [len(share) for share in shares] == [8, 8, 7]
    huge = RoundShare(range(10**15), 1000, Processes(2, 8))  # lazy: n of any size
    assert len(huge) == 125_000_000_000_000 and huge[1000] == 10_000 and huge[-1] == 10**15 - 5001
    assert huge[998:1002] == [2998, 2999, 10_000, 10_001]


def test_two_processes_write_the_same_files_as_one(tiny_ckpt: Path, tmp_path: Path):
    common = [f"ckpt={tiny_ckpt}", "n=10", "batch_size=3", "cpu_threads=1", "sampler=ddim", "sampler.steps=4"]
    one = run_cli("sample.py", *common, f"out={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-2000:]
    two = torchrun(*common, f"out={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes (cpu) share it, 3 images per batch each" in two.stdout + two.stderr
    written_one, written_two = files_of(tmp_path / "one"), files_of(tmp_path / "two")
    assert sorted(written_two) == sorted(written_one)
    assert len([name for name in written_two if name.startswith("images/")]) == 10
    assert written_two == written_one  # PNGs, grid.png, samples.npz and settings.json, byte for byte
    assert np.load(tmp_path / "two" / "samples.npz")["images"].shape == (10, 8, 8, 1)


def test_two_processes_edit_pictures_as_one(tiny_ckpt: Path, tmp_path: Path):
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for k in range(2):
        gray = np.full((8, 8), 40 + 150 * k, dtype=np.uint8)
        Image.fromarray(gray).save(pictures / f"p{k}.png")
    common = [
        f"ckpt={tiny_ckpt}",
        "mode=img2img",
        f"image={pictures}",
        "n=3",
        "batch_size=2",
        "cpu_threads=1",
    ]
    common += ["sampler=ddim", "sampler.steps=4", "strength=0.5"]
    one = run_cli("sample.py", *common, f"out={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-2000:]
    two = torchrun(*common, f"out={tmp_path / 'two'}")
    assert two.returncode == 0, two.stderr[-3000:]
    assert files_of(tmp_path / "two") == files_of(tmp_path / "one")
    settings = json.loads((tmp_path / "two" / "settings.json").read_text())
    assert settings["order"] == "result k is an edit of input k // n"


def test_a_refused_output_folder_ends_every_process_and_keeps_what_it_holds(tiny_ckpt: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = torchrun(f"ckpt={tiny_ckpt}", "n=4", "cpu_threads=1", f"out={out}", timeout=240)
    assert result.returncode != 0
    assert f"error: output folder {out} already exists and is not empty" in result.stderr
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_a_device_index_for_several_processes_is_one_line():
    with pytest.raises(ValueError, match=r"^device=cuda:1 names one device for 2 processes: use device=auto"):
        device_of("cuda:1", Processes(1, 2, 1))
    assert device_of("cpu", Processes(1, 2, 1)) == "cpu"
    assert device_of("cuda:1", Processes()) == "cuda:1"


def test_a_launcher_environment_without_its_rendezvous_is_one_line(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(
        ValueError, match=r"^WORLD_SIZE=2 but MASTER_ADDR is not set: start the processes with"
    ):
        started_processes()
    monkeypatch.setenv("MASTER_ADDR", "localhost")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert started_processes() == Processes(rank=1, world=2, local_rank=1)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert started_processes() == Processes()


def killing_a_rank(command: list[str], out: Path, rank: int) -> tuple[int, str]:
    """Run `command` (torchrun …), SIGKILL its worker of `rank` once rank 0 has written a first PNG into
    `out`/images (a rank lost: out of memory, a node gone), and wait for the end: (exit code, all its output)."""
    return stopped_job(command, out, lambda job: os.kill(rank_pid(job.pid, rank), signal.SIGKILL))


def stopped_job(command: list[str], out: Path, stop: Callable[[subprocess.Popen], None]) -> tuple[int, str]:
    """Run `command` (torchrun …), stop(job) once rank 0 has written a first PNG into `out`/images, and wait for
    the end: (exit code, all its output)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # stdin and stdout not inherited: under pytest-xdist they are the worker's channel to its controller.
    pipes = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    with subprocess.Popen(command, cwd=ROOT, env=env, text=True, **pipes) as job:
        deadline = time.monotonic() + 120
        while not any((out / "images").glob("*.png")) and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.1)
        assert any((out / "images").glob("*.png")), "rank 0 wrote nothing in two minutes"
        assert job.poll() is None, "the job ended before it could be stopped"
        stop(job)
        output, _ = job.communicate(timeout=300)
    return job.returncode, output


def test_a_process_that_dies_ends_the_job_and_rank_0_keeps_what_was_made(tiny_ckpt: Path, tmp_path: Path):
    """torchrun stops rank 0 (SIGTERM) when rank 1 dies; the images made so far stay for resume=true."""
    out = tmp_path / "out"
    command = [
        *TORCHRUN,
        "sample.py",
        f"ckpt={tiny_ckpt}",
        "n=2000",
        "batch_size=10",
        "cpu_threads=1",
        "sampler=ddim",
    ]
    command += ["sampler.steps=500", f"out={out}"]
    returncode, output = killing_a_rank(command, out, rank=1)
    assert returncode != 0
    kept = (
        f"error: sample.py stopped by SIGTERM; what it had made is kept in {out} (unfinished): {RESUME_HINT}"
    )
    assert kept in output
    assert (out / IN_USE).exists() and any((out / "images").glob("*.png"))
    assert not (out / "samples.npz").exists() and not (out / "settings.json").exists()


def test_a_job_stopped_with_sigterm_says_once_what_rank_0_kept(tiny_ckpt: Path, tmp_path: Path):
    """scancel or a time limit: torchrun passes SIGTERM to every process. Rank 0's line says what it kept; rank 1's
    leaves that to rank 0 (before, it said `nothing was written (what it had written was removed)`)."""
    out = tmp_path / "out"
    command = [*TORCHRUN, "sample.py", f"ckpt={tiny_ckpt}", "n=2000", "batch_size=10", "cpu_threads=1"]
    command += ["sampler=ddim", "sampler.steps=500", f"out={out}"]
    _, output = stopped_job(command, out, lambda job: job.send_signal(signal.SIGTERM))
    lines = [line for line in output.splitlines() if line.startswith("error: sample.py")]
    assert sorted(lines) == [
        "error: sample.py stopped by SIGTERM; rank 1 only generates; rank 0 writes and says what it kept",
        f"error: sample.py stopped by SIGTERM; what it had made is kept in {out} (unfinished): {RESUME_HINT}",
    ], output[-3000:]


def test_two_processes_score_what_one_scores(tiny_ckpt: Path, tmp_path: Path):
    common = [f"ckpt={tiny_ckpt}", "n=14", "batch_size=4", "cpu_threads=1", "sampler.steps=3", *LITE_EVAL]
    common.append(f"metrics.cache_dir={tmp_path / 'cache'}")
    one = run_cli("evaluate.py", *common, f"out={tmp_path / 'one.json'}")
    assert one.returncode == 0, one.stderr[-2000:]
    two = torchrun(*common, f"out={tmp_path / 'two.json'}", script="evaluate.py")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "2 processes (cpu) share it, 4 images per batch each" in two.stdout + two.stderr
    report_one = json.loads((tmp_path / "one.json").read_text())
    report_two = json.loads((tmp_path / "two.json").read_text())
    assert report_two["metrics"] == report_one["metrics"]
    assert report_two["generated"] == report_one["generated"]
    assert report_two["generated"]["n"] == 14


def test_scoring_images_under_torchrun_is_one_line(tmp_path: Path):
    result = torchrun("images=anything", "data=digits", f"out={tmp_path / 'r.json'}", script="evaluate.py")
    assert result.returncode != 0
    assert (
        "error: images= are scored by one process: run evaluate.py without torchrun or srun" in result.stderr
    )
    assert not (tmp_path / "r.json").exists()


def test_a_restarted_attempt_makes_its_process_group_without_the_first_attempts_addresses():
    """torchrun's agent keeps its store across a restart, with the peer addresses the first attempt's process
    group wrote in it; the restarted ranks read them and connected to processes that were gone (torch issue
    #135712): without its own store the probe failed or hung in 4 of 6 runs here, so it runs twice."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    command = [*TORCHRUN, "--max-restarts=1", "tests/restart_probe.py"]
    pipes = {"stdin": subprocess.DEVNULL, "capture_output": True, "text": True}
    for _ in range(2):
        result = subprocess.run(command, cwd=ROOT, env=env, timeout=120, **pipes)
        assert result.returncode == 0, result.stderr[-3000:]
        for rank in (0, 1):  # counted, not read as lines: the two ranks' prints can share a line
            assert result.stdout.count(f"attempt 1 rank {rank}: 2 processes") == 1, result.stdout


# Attempt 0 of a job claims a folder, writes into it and is killed (no clean-up, its lock on the mark let go).
KILLED_WRITER = """
import os, sys
from difflab.io.results import output_folder
claimed = output_folder(sys.argv[1], "sample", attempt=("torchrun job-a", 0))  # kept: not closed
folder = claimed.__enter__()
(folder.path / "0.png").write_bytes(b"half")
os._exit(0)
"""


def test_a_restarted_job_continues_only_what_its_own_earlier_attempt_left(tmp_path: Path):
    """An attempt killed outright (SIGKILL: out of memory) cannot tidy what it wrote; its IN_USE mark names its
    job and attempt, and only a later attempt of that job (or a user asking resume=true) may continue there."""
    left = tmp_path / "left"
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(left)], check=True)
    for someone_else in [None, ("torchrun job-b", 1), ("torchrun job-a", 0)]:  # not a later attempt of job-a
        refused = output_folder(left, "sample", attempt=someone_else)
        with pytest.raises(FileExistsError, match="is being written by another run"):
            refused.__enter__()
    with output_folder(left, "sample", attempt=("torchrun job-a", 1)) as folder:
        assert folder.continued and (folder.path / "0.png").read_bytes() == b"half"  # the caller's to resume
        assert (folder.path / IN_USE).read_text() == "torchrun job-a\n1"  # marked as attempt 1's now
        (folder.path / "0.png").write_bytes(b"whole")
    assert sorted(p.name for p in left.iterdir()) == ["0.png"]


def test_a_job_torchrun_restarts_after_rank_0_was_killed_writes_its_samples(tiny_ckpt: Path, tmp_path: Path):
    """Before, the restarted job was refused the out= its killed rank 0 had been writing ("being written by another
    run"), attempt after attempt."""
    common = [
        f"ckpt={tiny_ckpt}",
        "n=40",
        "batch_size=4",
        "cpu_threads=1",
        "sampler=ddim",
        "sampler.steps=50",
    ]
    one = run_cli("sample.py", *common, f"out={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-2000:]
    out = tmp_path / "two"
    command = [*TORCHRUN, "--max-restarts=1", "sample.py", *common, f"out={out}"]
    returncode, output = killing_a_rank(command, out, rank=0)  # rank 0: no chance to remove what it wrote
    assert returncode == 0, output[-3000:]
    resumed = re.search(r"resuming .*two: (\d+) of 40 images are on disk; making the other (\d+)", output)
    assert resumed, output[-3000:]
    assert int(resumed[1]) % 4 == 0 and int(resumed[1]) + int(resumed[2]) == 40  # whole batches kept
    assert files_of(out) == files_of(tmp_path / "one")


def test_where_there_is_no_flock_a_folder_is_claimed_and_finished_as_before(tmp_path: Path, monkeypatch):
    """Not POSIX (Windows has no fcntl): the mark is made and removed without a lock."""
    from difflab.io import results

    monkeypatch.setattr(results, "fcntl", None)
    with output_folder(tmp_path / "out", "sample") as folder:
        assert (folder.path / IN_USE).exists()
        (folder.path / "0.png").write_bytes(b"whole")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["0.png"]
