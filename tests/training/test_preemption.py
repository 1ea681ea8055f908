"""Cluster jobs: a preempted (signalled) job checkpoints, is requeued and resumes from that step in the same
folder and the same W&B run; the submitit launcher runs and requeues jobs (locally, with submitit_local)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST_TRAIN, ROOT
from PIL import Image

pytestmark = pytest.mark.slow

QUIET = [o for o in FAST_TRAIN if not o.startswith(("logger=", "trainer.max_steps="))] + ["cpu_threads=1"]


def env_with(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test's environment, W&B offline, this checkout's src/ and tests/ (the probe) importable, and a fake
    `scontrol` that records its arguments in <tmp_path>/scontrol.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    scontrol.chmod(0o755)
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "WANDB_MODE": "offline",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")]),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        **extra,
    }


def last_step(run: Path) -> int:
    return int(
        torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"]
    )


def wandb_ids(run: Path) -> list[str]:
    """Run ids of the offline W&B runs in the folder (offline-run-<time>-<id>), oldest first."""
    return [p.name.rsplit("-", 1)[-1] for p in sorted((run / "wandb").glob("offline-run-*"))]


def probed_train(run: Path, probe: Path, *overrides: str) -> list[str]:
    """The command of a quiet run into `run` that checkpoints only when signalled, with the step probe (writing
    into `probe`) and `overrides`."""
    return [
        sys.executable,
        "train.py",
        *QUIET,
        "callbacks.model_checkpoint.every_n_train_steps=1000",
        *overrides,
        "+callbacks.probe._target_=signal_probe.StepProbe",
        f"+callbacks.probe.dirpath={probe}",
        f"hydra.run.dir={run}",
    ]


def test_signal_saves_requeues_and_the_requeued_job_resumes_in_the_same_wandb_run(tmp_path):
    run, probe = tmp_path / "run", tmp_path / "probe"
    args = probed_train(run, probe, "logger=wandb")
    slurm = {"SLURM_JOB_ID": "4242"}  # no SLURM_NTASKS: Lightning's own SLURM support stays out of this
    job = subprocess.Popen(
        [*args, "trainer.max_steps=100000"],
        cwd=ROOT,
        env=env_with(tmp_path, **slurm),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ((probe / "step").is_file() and int((probe / "step").read_text() or 0) >= 2):
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1][-3000:]
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR2)  # what SLURM sends signal_delay_s before the time limit
    _, stderr = job.communicate(timeout=120)

    saved = last_step(run)
    assert job.returncode == 3, stderr[-3000:]
    assert saved >= 2
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    assert "Traceback" not in stderr

    # SLURM starts the same command again, counting the restart; nothing tells it to resume but that.
    again = subprocess.run(
        [*args, f"trainer.max_steps={saved + 2}"],
        cwd=ROOT,
        env=env_with(tmp_path, **slurm, SLURM_RESTART_COUNT="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        f"resuming from {run / 'checkpoints' / 'last.ckpt'} at step {saved}"
        in (run / "train.log").read_text()
    )
    assert last_step(run) == saved + 2
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]  # updated, not last-v1
    run_id = (run / "wandb_run_id").read_text().strip()
    assert wandb_ids(run) == [run_id, run_id]  # one W&B run, continued


def test_submitit_local_runs_two_jobs_and_requeues_each_after_its_checkpoint(tmp_path):
    sweep = tmp_path / "sweep"
    result = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "hydra/launcher=submitit_local",
            "seed=1,2",
            *QUIET,
            "trainer.max_steps=5",
            "logger=wandb",
            "callbacks.model_checkpoint.every_n_train_steps=1000",
            "+callbacks.probe._target_=signal_probe.StepProbe",
            "+callbacks.probe.dirpath=${hydra:runtime.output_dir}/probe",
            "+callbacks.probe.signal_at_step=2",  # lands mid-step: the checkpoint is step 3
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
        env=env_with(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    weights = []
    for job in (sweep / "0", sweep / "1"):
        assert last_step(job) == 5
        log = (job / "train.log").read_text()
        assert f"resuming from {job / 'checkpoints' / 'last.ckpt'} at step 3" in log
        run_id = (job / "wandb_run_id").read_text().strip()
        assert wandb_ids(job) == [run_id, run_id]
        weights.append(torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"])
    assert (sweep / "0" / "wandb_run_id").read_text() != (sweep / "1" / "wandb_run_id").read_text()
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # seed=1 vs seed=2


def test_sigterm_outside_slurm_saves_exits_non_zero_and_the_resume_matches_an_uninterrupted_run(tmp_path):
    """`kill`, `docker stop`, `timeout`: the step under way finishes, last.ckpt is written, the exit code says it
    stopped (not 0), and `ckpt_path=last` continues exactly where an uninterrupted run would be."""
    run, straight, probe = tmp_path / "run", tmp_path / "straight", tmp_path / "probe"
    common = [
        *QUIET,
        "logger=none",
        "callbacks.model_checkpoint.every_n_train_steps=1000",
        "trainer.log_every_n_steps=1",
    ]
    env = env_with(tmp_path)
    stopped = subprocess.run(
        [
            sys.executable,
            "train.py",
            *common,
            "trainer.max_steps=6",
            "+callbacks.probe._target_=signal_probe.StepProbe",
            f"+callbacks.probe.dirpath={probe}",
            "+callbacks.probe.signal_at_step=2",  # lands mid-step: the checkpoint is step 3
            "+callbacks.probe.signal_name=SIGTERM",
            f"hydra.run.dir={run}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert last_step(run) == 3
    assert f"stopped on SIGTERM at step 3 after saving {run / 'checkpoints' / 'last.ckpt'}" in stopped.stderr

    # The probe was added with `+`: a resume takes no new key from a run folder, so it is typed again here.
    typed_again = [a for a in stopped.args if a.startswith("+callbacks.probe")]
    resumed = subprocess.run(
        [sys.executable, "train.py", "ckpt_path=last", f"hydra.run.dir={run}", *typed_again],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    whole = subprocess.run(
        [sys.executable, "train.py", *common, "trainer.max_steps=6", f"hydra.run.dir={straight}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert whole.returncode == 0, whole.stderr[-3000:]
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True) for r in (run, straight))
    assert a["global_step"] == b["global_step"] == 6
    for key in ("state_dict", "current_model_state"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in b[key]), key
    # The curve has no gap and is the uninterrupted run's: before, the loss of the step saved at the signal (the
    # step logged as 2) was never logged.
    losses = [
        {row["step"]: row["train/loss"] for row in map(json.loads, (r / "metrics.jsonl").read_text().splitlines())
         if "train/loss" in row}
        for r in (run, straight)
    ]  # fmt: skip
    assert sorted(losses[1]) == list(range(6)) and losses[0] == losses[1]


def test_a_stop_signal_keeps_the_post_hoc_ema_snapshot_of_the_step_it_saves(tmp_path):
    """Before, the signal's checkpoint (step 3) was written before the post-hoc EMA callback's turn in that step and
    the run stopped, so no snapshot of step 3 was ever written: the resumed run went on at 4, and reconstructions
    warned of a missing step. Snapshots every step: the resumed run has the uninterrupted run's, bit for bit."""
    from difflab.training.phema_snapshots import list_snapshots, read_snapshot

    run, straight, probe = tmp_path / "run", tmp_path / "straight", tmp_path / "probe"
    phema = [
        "logger=none",
        "callbacks=[default,phema]",
        "callbacks.phema.every_n_steps=1",
        "trainer.max_steps=5",
    ]
    env = env_with(tmp_path)
    stopped = subprocess.run(
        [*probed_train(run, probe, *phema), "+callbacks.probe.signal_at_step=2", "+callbacks.probe.signal_name=SIGTERM"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert stopped.returncode == 3 and last_step(run) == 3, stopped.stderr[-3000:]
    typed_again = [a for a in stopped.args if a.startswith("+callbacks.probe")]
    for command in (
        [sys.executable, "train.py", "ckpt_path=last", f"hydra.run.dir={run}", *typed_again],
        [sys.executable, "train.py", *QUIET, *phema, f"hydra.run.dir={straight}"],
    ):
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    snapshots = [list_snapshots(r / "phema" / "snapshots") for r in (run, straight)]
    assert [s.step for s in snapshots[0]] == [s.step for s in snapshots[1]] == [1, 2, 3, 4, 5]
    for resumed, whole in zip(*snapshots, strict=True):
        a, b = read_snapshot(resumed.path)["states"], read_snapshot(whole.path)["states"]
        for state_a, state_b in zip(a, b, strict=True):
            assert all(torch.equal(state_a[k], state_b[k]) for k in state_b), resumed.step


def test_sigterm_to_every_process_of_a_run_with_loader_workers_saves_the_step(tmp_path):
    """SLURM's time limit, `timeout` and `kill -- -<pgid>` signal the data loader workers as well. Before, a worker
    died of it, and the run ended with "a data loader worker (pid …) was killed by signal: Terminated", saving no
    checkpoint."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(200):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / f"{i}.png")
    run, probe = tmp_path / "run", tmp_path / "probe"
    overrides = ["data=folder", f"data.root={folder}", "data.image_size=8", "data.channels=1"]
    overrides += [
        "data.num_workers=2",
        "data.persistent_workers=true",
        "logger=none",
        "trainer.max_steps=100000",
    ]
    job = subprocess.Popen(
        probed_train(run, probe, *overrides),
        cwd=ROOT,
        env=env_with(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a job's: the signal reaches the run's processes only
    )
    deadline = time.monotonic() + 240
    while not ((probe / "step").exists() and int((probe / "step").read_text() or 0) >= 3):
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1][-3000:]
        time.sleep(0.2)
    os.killpg(job.pid, signal.SIGTERM)
    _, stderr = job.communicate(timeout=240)
    assert job.returncode == 3, stderr[-3000:]
    assert "data loader worker" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    assert last_step(run) >= 3 and "stopped on SIGTERM at step" in stderr


def ctrl_c_run(tmp_path: Path, times: int, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    """A 6-step run that gets `times` Ctrl-Cs (SIGINT) at the start of step 2, started as a terminal starts it
    (SIGINT not ignored)."""
    run, probe = tmp_path / "run", tmp_path / "probe"
    args = probed_train(
        run,
        probe,
        "logger=none",
        "trainer.max_steps=6",
        "+callbacks.probe.signal_at_step=2",
        "+callbacks.probe.signal_name=SIGINT",
        f"+callbacks.probe.times={times}",
        *extra,
    )
    return from_a_terminal(args, tmp_path), run


def from_a_terminal(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """`args` run to the end as a terminal starts a command: SIGINT not ignored, so Ctrl-C reaches Python."""
    return subprocess.run(
        args,
        cwd=ROOT,
        env=env_with(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_ctrl_c_finishes_the_step_saves_and_says_how_to_resume(tmp_path):
    # Before, Ctrl-C stopped at once and saved nothing: the steps since the last checkpoint were lost.
    stopped, run = ctrl_c_run(tmp_path, times=1)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    assert last_step(run) == 3
    saved = run / "checkpoints" / "last.ckpt"
    assert (
        f"stopped on SIGINT (Ctrl-C) at step 3 after saving {saved}; resume with ckpt_path=last hydra.run.dir={run}"
        in (stopped.stderr)
    )
    assert "Ctrl-C again to stop at once" in stopped.stdout + stopped.stderr


def test_a_second_ctrl_c_stops_at_once_without_saving_in_one_line(tmp_path):
    # Before, Lightning's shutdown ended it with exit 1 and no line of difflab's.
    stopped, run = ctrl_c_run(tmp_path, times=2)
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert not (run / "checkpoints" / "last.ckpt").exists()
    assert "error: train.py interrupted; no checkpoint had been written: its steps are lost" in stopped.stderr


def test_a_second_ctrl_c_after_a_step_while_a_grid_or_fid_runs_saves_that_step(tmp_path):
    # The step is whole (a grid or an FID evaluation is sampling): stopping at once need not lose it. Before, the
    # steps since the last periodic checkpoint were lost (here: no checkpoint at all).
    stopped, run = ctrl_c_run(tmp_path, 2, "+callbacks.probe.after_step=true")
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert last_step(run) == 2
    saved = run / "checkpoints" / "last.ckpt"
    assert (
        f"error: train.py interrupted; saved {saved} at step 2: resume with ckpt_path=last hydra.run.dir={run}"
        in stopped.stderr
    )
    assert "Traceback" not in stopped.stderr


def test_ctrl_c_before_the_first_step_gives_a_fresh_runs_folder_back(tmp_path):
    # Nothing was trained, so nothing is lost; before, the folder stayed (.hydra, train.log) and the same command
    # was then refused: "already holds a run".
    run = tmp_path / "run"
    probe = "+callbacks.probe._target_=signal_probe.SignalAtSetup"
    args = [sys.executable, "train.py", *QUIET, "logger=none", probe, f"hydra.run.dir={run}"]
    stopped = from_a_terminal(args, tmp_path)
    assert stopped.returncode != 0, stopped.stderr[-3000:]
    assert not run.exists(), sorted(p.name for p in run.iterdir())


def signalled_run(
    tmp_path: Path, *probe: str, signal_name: str = "SIGTERM", **env: str
) -> tuple[subprocess.CompletedProcess, Path]:
    """A fresh 4-step run whose probe sends it `signal_name` as `probe` says; no SLURM job (`kill`, `docker stop`)
    unless `env` makes one."""
    run = tmp_path / "run"
    args = [
        sys.executable,
        "train.py",
        *QUIET,
        "logger=none",
        "trainer.max_steps=4",
        "callbacks.model_checkpoint.every_n_train_steps=1000",
        *probe,
        f"+callbacks.probe.signal_name={signal_name}",
        f"hydra.run.dir={run}",
    ]
    full_env = {k: v for k, v in env_with(tmp_path).items() if not k.startswith("SLURM_")} | env
    return subprocess.run(args, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=300), run


def test_sigterm_before_the_first_step_stops_with_one_line_and_gives_a_fresh_runs_folder_back(tmp_path):
    # Before, the process died of the signal with no word and left its folder (.hydra, train.log), so the same
    # command was then refused: "already holds a run that wrote no checkpoint".
    stopped, run = signalled_run(tmp_path, "+callbacks.probe._target_=signal_probe.SignalAtSetup")
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "error: train.py stopped by SIGTERM; nothing was trained (its run folder was given back)" in (
        stopped.stderr
    )
    assert "Traceback" not in stopped.stderr
    assert not run.exists(), sorted(p.name for p in run.iterdir())


def test_sigterm_after_the_last_steps_check_saves_that_step_and_stops(tmp_path):
    # The signal lands once the last step's end was looked at (as its validation runs). Before, it was dropped:
    # the run went on to its final grid and FID and ended with exit 0, as if it had not been asked to stop.
    probe = tmp_path / "probe"
    stopped, run = signalled_run(
        tmp_path,
        "+callbacks.probe._target_=signal_probe.StepProbe",
        f"+callbacks.probe.dirpath={probe}",
        "+callbacks.probe.signal_at_step=4",
        "+callbacks.probe.after_step=true",
    )
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert last_step(run) == 4
    assert f"stopped on SIGTERM at step 4 after saving {run / 'checkpoints' / 'last.ckpt'}" in stopped.stderr


def test_sigterm_while_the_final_grid_or_fid_runs_saves_the_last_step_and_says_so(tmp_path):
    # Before, Lightning's handler took note of the signal and nothing read the note: the run ended with exit 0.
    stopped, run = signalled_run(
        tmp_path,
        "+callbacks.probe._target_=signal_probe.StepProbe",
        f"+callbacks.probe.dirpath={tmp_path / 'probe'}",
        "+callbacks.probe.at_train_end=true",
    )
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert last_step(run) == 4
    saved = run / "checkpoints" / "last.ckpt"
    assert (
        f"error: train.py stopped by SIGTERM; saved {saved} at step 4: resume with ckpt_path=last hydra.run.dir={run}"
        in (stopped.stderr)
    )
    assert "Traceback" not in stopped.stderr


def test_the_requeue_signal_in_the_final_grid_or_fid_saves_the_last_step_and_requeues_the_job(tmp_path):
    # `#SBATCH --signal=USR2@180 --requeue`: the time limit comes while the final FID runs. Before, the signal's
    # default action killed the process: the steps since the last checkpoint were lost and the job not requeued.
    stopped, run = signalled_run(
        tmp_path,
        "+callbacks.probe._target_=signal_probe.StepProbe",
        f"+callbacks.probe.dirpath={tmp_path / 'probe'}",
        "+callbacks.probe.at_train_end=true",
        signal_name="SIGUSR2",
        SLURM_JOB_ID="4242",
    )
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert last_step(run) == 4
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    saved = run / "checkpoints" / "last.ckpt"
    assert f"requeued SLURM job 4242; it resumes from {saved}" in stopped.stdout + stopped.stderr


def test_sigterm_before_a_resumes_first_step_leaves_its_checkpoint_as_it_was_and_says_how_to_go_on(tmp_path):
    run = tmp_path / "run"
    first = [sys.executable, "train.py", *QUIET, "logger=none", "trainer.max_steps=4", f"hydra.run.dir={run}"]
    finished = subprocess.run(
        first, cwd=ROOT, env=env_with(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    saved = run / "checkpoints" / "last.ckpt"
    before = saved.read_bytes()
    resume = [
        sys.executable,
        "train.py",
        "ckpt_path=last",
        "trainer.max_steps=6",
        "+callbacks.probe._target_=signal_probe.SignalAtSetup",
        "+callbacks.probe.signal_name=SIGTERM",
        f"hydra.run.dir={run}",
    ]
    stopped = subprocess.run(
        resume, cwd=ROOT, env=env_with(tmp_path), capture_output=True, text=True, timeout=300
    )
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert (
        f"error: train.py stopped by SIGTERM; {saved} is as it was: resume with ckpt_path=last hydra.run.dir={run}"
        in (stopped.stderr)
    )
    assert saved.read_bytes() == before


def test_a_stop_at_a_periodic_checkpoints_step_writes_that_checkpoint_too(tmp_path):
    # The signal lands in step 2, the run stops after step 3, where a periodic checkpoint is due. Before, only
    # last.ckpt was written (the stop came before Lightning's checkpoint writer, which runs last): the resumed run
    # went on past step 3 and a run keeping every periodic checkpoint had a gap there for good.
    probe = tmp_path / "probe"
    stopped, run = signalled_run(
        tmp_path,
        "callbacks.model_checkpoint.every_n_train_steps=3",
        "+callbacks.probe._target_=signal_probe.StepProbe",
        f"+callbacks.probe.dirpath={probe}",
        "+callbacks.probe.signal_at_step=2",
    )
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert last_step(run) == 3
    periodic = run / "checkpoints" / "step_0000003.ckpt"
    assert torch.load(periodic, map_location="cpu", weights_only=True)["global_step"] == 3


def run_signalled_in_sampling(
    tmp_path: Path, signal_name: str, *extra: str
) -> tuple[subprocess.CompletedProcess, Path]:
    """A 4-step run (grid every 2 steps) whose sampler sends it `signal_name` as the first grid or FID evaluation
    starts sampling (step 2), started as a terminal starts it (Ctrl-C reaches Python), outside SLURM."""
    run = tmp_path / "run"
    args = [
        *probed_train(run, tmp_path / "probe", "logger=none", "trainer.max_steps=4", *extra),
        "sampler._target_=signal_probe.SignallingDDIM",
        f"+sampler.marker={tmp_path / 'signalled'}",
        f"+sampler.signal_name={signal_name}",
    ]
    env = {k: v for k, v in env_with(tmp_path).items() if not k.startswith("SLURM_")}
    stopped = subprocess.run(
        args,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    return stopped, run


def test_sigterm_while_a_grid_samples_gives_the_grid_up_and_saves_that_step_at_once(tmp_path):
    # Before, the grid ran to its end and one more step was trained before the save: with a large grid or FID set
    # that is minutes, past a cluster's grace time (SIGKILL next), and the steps since the last checkpoint were lost.
    stopped, run = run_signalled_in_sampling(tmp_path, "SIGTERM")
    assert stopped.returncode == 3, stopped.stderr[-3000:]
    assert last_step(run) == 2
    assert f"stopped on SIGTERM at step 2 after saving {run / 'checkpoints' / 'last.ckpt'}" in stopped.stderr
    assert "sample grid step_0000002 at step 2 given up for a stop signal" in stopped.stdout + stopped.stderr
    assert not (run / "samples" / "step_0000002.png").exists()
    assert "Traceback" not in stopped.stderr
    # The resumed run makes the grid given up before it trains on; before, step 2 never had one.
    resumed = resume_signalled_run(stopped, run, tmp_path)
    assert "sample grid step_0000002, given up for a stop signal, made now" in resumed.stdout + resumed.stderr
    assert (run / "samples" / "step_0000002.png").is_file() and last_step(run) == 4
    # No gap in the curve: before, the step the grid gave way at (logged as 1) had no train/loss.
    rows = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    assert sorted({row["step"] for row in rows if "train/loss" in row}) == [0, 1, 2, 3]


def test_ctrl_c_while_an_fid_evaluation_samples_gives_it_up_and_saves_that_step(tmp_path):
    stopped, run = run_signalled_in_sampling(
        tmp_path,
        "SIGINT",
        "callbacks=[default,fid]",
        "callbacks.sample_grid.every_n_steps=0",
        "callbacks.fid.every_n_steps=2",
        "callbacks.fid.num_samples=6",
        "metrics.num_reference=20",
        "metrics.kid_subset_size=5",
        "metrics.prc=false",
        f"metrics.cache_dir={tmp_path / 'cache'}",
    )
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert last_step(run) == 2
    assert "FID evaluation at step 2 given up for a stop signal" in stopped.stdout + stopped.stderr
    assert (
        f"stopped on SIGINT (Ctrl-C) at step 2 after saving {run / 'checkpoints' / 'last.ckpt'}"
        in stopped.stderr
    )
    assert "Traceback" not in stopped.stderr
    # The resumed run scores step 2 before it trains on; before, the FID curve had no point at step 2.
    resumed = resume_signalled_run(stopped, run, tmp_path)
    assert "FID evaluation at step 2, given up for a stop signal, made now" in resumed.stdout + resumed.stderr
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "val/fd_effl0" in row] == [2, 4]


def resume_signalled_run(stopped: subprocess.CompletedProcess, run: Path, tmp_path: Path):
    """The command of a run_signalled_in_sampling run again, with ckpt_path=last (the sampler's marker is there, so
    it signals no more)."""
    resumed = subprocess.run(
        [*stopped.args, "ckpt_path=last"],
        cwd=ROOT,
        env={k: v for k, v in env_with(tmp_path).items() if not k.startswith("SLURM_")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return resumed
