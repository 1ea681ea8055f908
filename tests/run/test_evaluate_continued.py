"""evaluate.py stopped part-way (a cluster's SIGTERM, Ctrl-C, out of memory) keeps what it had scored, and the same
command continues from the next image to the report an unstopped run writes, to the digit."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAIN, LITE_EVAL, ROOT, TORCHRUN, compose_config, rank_pid, run_cli, run_torchrun

from difflab.cluster.stop_signal import StoppedBySignal, stop_signal_raises, stops_held
from difflab.evaluation import unfinished
from difflab.evaluation.unfinished import FOLDER
from difflab.metrics import Evaluator
from difflab.metrics.statistics import StatsAccumulator
from difflab.run.evaluate import evaluate
from difflab.run.train import train

SETTINGS = ["n=24", "batch_size=8", "sampler.steps=3", "cpu_threads=1", *LITE_EVAL]


def settings(ckpt: Path, cache: Path, *more: str) -> list[str]:
    return [f"ckpt={ckpt}", *SETTINGS, f"metrics.cache_dir={cache}", *more]


def evaluated(overrides: list[str], tmp_path: Path, out: str) -> dict:
    return evaluate(compose_config("eval", [*overrides, f"out={tmp_path / out}"], tmp_path / "run"))


def stopped_after(monkeypatch, batches: int, stop: BaseException) -> None:
    """The next evaluation is stopped by `stop` once `batches` batches are scored (as a signal would be, while it
    generates or embeds the next)."""
    embed, calls = Evaluator.embed, []

    def embedding(evaluator, images, device="cpu"):
        calls.append(len(images))
        if len(calls) > batches:
            raise stop
        return embed(evaluator, images, device)

    monkeypatch.setattr(Evaluator, "embed", embedding)


def kept_files(cache: Path) -> list[Path]:
    return sorted((cache / FOLDER).glob("*.pt"))


def kept_by_a_stopped_run(overrides: list[str], cache: Path, tmp_path: Path, monkeypatch) -> Path:
    """The file an evaluation of `overrides` keeps when Ctrl-C stops it after its first batch."""
    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        stopped_after(patch, 1, KeyboardInterrupt())
        evaluated(overrides, tmp_path, "stopped.json")
    [kept] = kept_files(cache)
    return kept


@pytest.mark.parametrize(
    ("stop", "code", "how"),
    [(StoppedBySignal(signal.SIGTERM), 143, "stopped by SIGTERM"), (KeyboardInterrupt(), 130, "interrupted")],
)
def test_a_stopped_evaluation_continues_to_the_report_an_unstopped_one_writes(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch, capsys, caplog, stop, code, how
) -> None:
    cache = tmp_path / "cache"
    # A feature sample smaller than the set: KID and precision/recall read the reservoir a continued run keeps.
    more = ["metrics.keep_features=12", "metrics.inception_score=true", "metrics.isc_splits=2"]
    overrides = settings(tiny_ckpt, cache, *more)
    unstopped = evaluated(overrides, tmp_path, "unstopped.json")

    with monkeypatch.context() as patch:
        stopped_after(patch, 2, stop)
        with pytest.raises(SystemExit) as ended:
            evaluated(overrides, tmp_path, "continued.json")
    assert ended.value.code == code
    [kept] = kept_files(cache)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (
        f"error: evaluate.py {how}; 16 of its 24 images were scored and kept in {kept}: the same command "
        "continues from there"
    )
    assert not (tmp_path / "continued.json").exists()

    with caplog.at_level(logging.INFO, logger="difflab"):
        continued = evaluated(overrides, tmp_path, "continued.json")
    assert (
        f"continuing a stopped evaluation ({kept}): 16 of 24 images were scored; generating the other 8 in batches "
        "of 8, as it was started" in caplog.text
    )
    assert continued["metrics"] == unstopped["metrics"]
    assert continued["generated"] == unstopped["generated"]
    assert kept_files(cache) == []  # a finished evaluation has no more use for it


def test_what_a_killed_evaluation_had_kept_as_it_went_is_continued_to_the_same_report(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    """SIGKILL (the out-of-memory killer, a node lost) runs no handler: what is on disk then is what the evaluation
    kept as it went. Before, nothing was: the same command started over."""
    cache = tmp_path / "cache"
    overrides = settings(tiny_ckpt, cache, "metrics.keep_features=12")
    unstopped = evaluated(overrides, tmp_path, "unstopped.json")
    monkeypatch.setattr(unfinished, "KEEP_EVERY_S", 0.0)  # keep after every batch
    embed, on_disk = Evaluator.embed, {}

    def embedding(evaluator, images, device="cpu"):
        if kept_files(cache) and not on_disk:  # the second batch: the first was kept as it went
            on_disk[kept_files(cache)[0].name] = kept_files(cache)[0].read_bytes()
        return embed(evaluator, images, device)

    monkeypatch.setattr(Evaluator, "embed", embedding)
    evaluated(overrides, tmp_path, "finished.json")
    assert on_disk and kept_files(cache) == []  # the finished evaluation removed what it kept as it went

    # As a kill during the second batch left the folder: the first batch's statistics.
    monkeypatch.setattr(Evaluator, "embed", embed)
    [(name, data)] = on_disk.items()
    (cache / FOLDER / name).write_bytes(data)
    with caplog.at_level(logging.INFO, logger="difflab"):
        continued = evaluated(overrides, tmp_path, "continued.json")
    assert (
        "8 of 24 images were scored; generating the other 16 in batches of 8, as it was started"
        in caplog.text
    )
    assert continued["metrics"] == unstopped["metrics"]
    assert kept_files(cache) == []


def test_a_continuation_in_batches_of_another_size_keeps_the_file_it_could_continue_from(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch, capsys, caplog
) -> None:
    """8 images kept in batches of 8, then 5 more in batches of 5: a file of 13 in batches of 5 could not be
    continued from. Before, it replaced the file of 8 (and the next run started over)."""
    cache = tmp_path / "cache"
    overrides = settings(tiny_ckpt, cache)
    kept_by_a_stopped_run(overrides, cache, tmp_path, monkeypatch)
    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        stopped_after(patch, 1, StoppedBySignal(signal.SIGTERM))
        evaluated([*overrides, "batch_size=5"], tmp_path, "stopped_again.json")
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: evaluate.py stopped by SIGTERM; 13 of its 24 images were scored in batches of two sizes, so not "
        "kept again; the same command continues from what was kept before"
    )
    with caplog.at_level(logging.INFO, logger="difflab"):
        evaluated(overrides, tmp_path, "continued.json")
    assert (
        "8 of 24 images were scored; generating the other 16 in batches of 8, as it was started"
        in caplog.text
    )


def test_a_stop_before_any_image_is_scored_keeps_nothing(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    cache = tmp_path / "cache"
    stopped_after(monkeypatch, 0, StoppedBySignal(signal.SIGTERM))
    with pytest.raises(SystemExit):
        evaluated(settings(tiny_ckpt, cache), tmp_path, "r.json")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == "error: evaluate.py stopped by SIGTERM; nothing was written (no image had been scored yet)"
    assert kept_files(cache) == []


def test_what_another_seed_scored_is_not_continued_from(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    cache = tmp_path / "cache"
    seed_0 = kept_by_a_stopped_run(settings(tiny_ckpt, cache, "seed=0"), cache, tmp_path, monkeypatch)
    with caplog.at_level(logging.INFO, logger="difflab"):
        other = evaluated(settings(tiny_ckpt, cache, "seed=1"), tmp_path, "b.json")
    assert "continuing" not in caplog.text
    assert other["generated"]["seed"] == 1
    assert kept_files(cache) == [seed_0]  # still there for the command that was stopped


def test_a_finished_evaluation_leaves_what_an_identical_one_kept_meanwhile(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch
) -> None:
    # Two identical commands side by side, one of them stopped: before, the one that finished removed the other's
    # kept file, and the stopped command started over.
    cache = tmp_path / "cache"
    overrides = settings(tiny_ckpt, cache)
    kept = kept_by_a_stopped_run(overrides, cache, tmp_path, monkeypatch)
    other_runs = kept.read_bytes()
    kept.unlink()

    embed = Evaluator.embed

    def other_run_stopped_meanwhile(evaluator, images, device="cpu"):
        if not kept.exists():
            kept.write_bytes(other_runs)
        return embed(evaluator, images, device)

    with monkeypatch.context() as patch:
        patch.setattr(Evaluator, "embed", other_run_stopped_meanwhile)
        evaluated(overrides, tmp_path, "b.json")
    assert kept_files(cache) == [kept] and kept.read_bytes() == other_runs
    evaluated(overrides, tmp_path, "c.json")  # the stopped command, run again: continues and finishes
    assert kept_files(cache) == []


def test_an_unreadable_kept_file_is_said_and_the_evaluation_starts_over(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    cache = tmp_path / "cache"
    overrides = settings(tiny_ckpt, cache)
    kept = kept_by_a_stopped_run(overrides, cache, tmp_path, monkeypatch)
    kept.write_bytes(kept.read_bytes()[:100])  # e.g. a disk that failed under it
    with caplog.at_level(logging.INFO, logger="difflab"):
        report = evaluated(overrides, tmp_path, "b.json")
    assert f"{kept} cannot be continued from (" in caplog.text and "starting over" in caplog.text
    assert "weights_only" not in caplog.text  # before, torch's advice to load it unsafely (helper report)
    assert "continuing" not in caplog.text
    assert (
        kept_files(cache) == []
    )  # removed once this evaluation is done (before: warned of by every later one)
    unstopped = evaluated(overrides, tmp_path, "c.json")
    assert report["metrics"] == unstopped["metrics"]


@pytest.mark.slow
def test_a_class_conditional_evaluation_continues_to_the_same_conditioning_accuracy(
    tmp_path: Path, monkeypatch
) -> None:
    run = tmp_path / "run"
    train(compose_config("train", [*FAST_TRAIN, "model.num_classes=10", "trainer.max_steps=2"], run))
    cache = tmp_path / "cache"
    overrides = settings(run / "checkpoints" / "last.ckpt", cache, "n=20", "batch_size=5", "guidance=2")
    overrides.append("metrics.classifier_train_images=100")
    unstopped = evaluated(overrides, tmp_path, "unstopped.json")
    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        stopped_after(patch, 3, StoppedBySignal(signal.SIGTERM))
        evaluated(overrides, tmp_path, "continued.json")
    continued = evaluated(overrides, tmp_path, "continued.json")
    assert "cond_accuracy" in continued["metrics"]
    assert continued["metrics"] == unstopped["metrics"]
    assert continued["conditioning"] == unstopped["conditioning"]


@pytest.mark.slow
def test_two_processes_continue_what_one_process_scored(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    cache = tmp_path / "cache"
    overrides = settings(tiny_ckpt, cache)
    # Scored in a process of its own, as the continuing ones are: the Fréchet distance's matrix square root, on
    # BLAS's threads, differs in its last digits between processes that run it on other thread counts.
    one = run_cli("evaluate.py", *overrides, f"out={tmp_path / 'unstopped.json'}")
    assert one.returncode == 0, one.stderr[-3000:]
    unstopped = json.loads((tmp_path / "unstopped.json").read_text())
    with monkeypatch.context() as patch, pytest.raises(SystemExit):
        stopped_after(patch, 1, StoppedBySignal(signal.SIGTERM))
        evaluated(overrides, tmp_path, "a.json")
    assert len(kept_files(cache)) == 1
    two = run_torchrun("evaluate.py", *overrides, f"out={tmp_path / 'two.json'}")
    assert two.returncode == 0, two.stderr[-3000:]
    assert "8 of 24 images were scored; generating the other 16 in batches of 8" in two.stdout + two.stderr
    report = json.loads((tmp_path / "two.json").read_text())
    assert report["metrics"] == unstopped["metrics"]
    assert kept_files(cache) == []


def stopped_torchrun(overrides: list[str], cache: Path, stop: str) -> str:
    """Output of evaluate.py under torchrun (2 processes) stopped 3 s into generation: its rank 1 killed (out of host
    memory, a node lost: torchrun then stops rank 0 with SIGTERM while its collective fails), or torchrun sent
    SIGTERM (as scancel and a cluster's time limit do), which it passes to both."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    pipes = {"stdin": subprocess.DEVNULL, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT}
    with subprocess.Popen(
        [*TORCHRUN, "evaluate.py", *overrides], cwd=ROOT, env=env, text=True, **pipes
    ) as job:
        deadline = time.monotonic() + 120
        while not any(cache.rglob("*.npz")) and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.05)  # the reference statistics are written just before generation starts
        time.sleep(3)
        assert job.poll() is None, "the job ended before it could be stopped"
        if stop == "kill rank 1":
            os.kill(rank_pid(job.pid, 1), signal.SIGKILL)
        else:
            job.send_signal(signal.SIGTERM)
        output, _ = job.communicate(timeout=120)
    return output


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["kill rank 1", "SIGTERM"])
def test_a_stopped_torchrun_job_keeps_what_rank_0_scored_for_one_process_to_continue(
    tiny_ckpt: Path, tmp_path: Path, stop: str
) -> None:
    cache = tmp_path / "cache"
    overrides = [
        f"ckpt={tiny_ckpt}",
        "n=500",
        "batch_size=10",
        "sampler.steps=10",
        "cpu_threads=1",
        *LITE_EVAL,
    ]
    overrides.append(f"metrics.cache_dir={cache}")
    output = stopped_torchrun([*overrides, f"out={tmp_path / 'two.json'}"], cache, stop)
    [kept] = kept_files(cache)
    said = r"error: evaluate\.py stopped by SIGTERM; (\d+) of its 500 images were scored and kept in "
    found = re.search(said + re.escape(str(kept)) + ": the same command continues from there", output)
    assert found and int(found.group(1)) > 0, output[-3000:]
    assert not (tmp_path / "two.json").exists()
    if stop == "SIGTERM":  # rank 1 had it too: its line leaves what was kept to rank 0's
        rank_1 = "error: evaluate.py stopped by SIGTERM; rank 1 only generates; rank 0 scores and says what it kept"
        assert rank_1 in output, output[-3000:]
        return
    continued = evaluated(overrides, tmp_path, "one.json")
    assert kept_files(cache) == []
    # What it kept is gone: this one starts afresh.
    unstopped = evaluated(overrides, tmp_path, "unstopped.json")
    assert continued["metrics"] == unstopped["metrics"]


def test_a_stop_within_a_held_block_acts_once_the_block_is_done() -> None:
    done = []
    with pytest.raises(StoppedBySignal), stop_signal_raises():
        with stops_held():
            signal.raise_signal(signal.SIGTERM)
            done.append("all of the block")
        done.append("after the block")  # not reached: the stop acts as the block ends
    assert done == ["all of the block"]
    with pytest.raises(KeyboardInterrupt), stops_held():
        signal.raise_signal(signal.SIGINT)
        done.append("Ctrl-C waits too")
    assert done[-1] == "Ctrl-C waits too"


def test_statistics_continued_from_a_state_equal_those_taken_in_one_go() -> None:
    batches = [torch.randn(7, 5, generator=torch.Generator().manual_seed(k)) + k for k in range(4)]
    whole = StatsAccumulator(5, "test", keep_features=10)
    for batch in batches:
        whole.update(batch)
    first = StatsAccumulator(5, "test", keep_features=10)
    for batch in batches[:2]:
        first.update(batch)
    continued = StatsAccumulator(5, "test", keep_features=10)
    continued.load_state_dict(first.state_dict())
    for batch in batches[2:]:
        continued.update(batch)
    a, b = whole.result(), continued.result()
    assert (a.mu == b.mu).all() and (a.sigma == b.sigma).all() and (a.features == b.features).all()
    with pytest.raises(ValueError, match="do not fit"):
        StatsAccumulator(6, "test", keep_features=10).load_state_dict(first.state_dict())


def sigterm_while_kept(monkeypatch) -> None:
    """SIGTERM lands while the file is written."""
    from difflab.evaluation import unfinished

    save = torch.save

    def saving_when_stopped(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        save(*args, **kwargs)

    monkeypatch.setattr(unfinished.torch, "save", saving_when_stopped)


def sigterm_as_the_process_group_ends(monkeypatch) -> None:
    """SIGTERM lands once the file is written, while the failure goes up through the process group's end."""
    from difflab.cluster import processes

    group = processes.process_group

    @contextlib.contextmanager
    def stopped_on_the_way_out(*args, **kwargs):
        with group(*args, **kwargs):
            try:
                yield
            finally:
                signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr("difflab.run.evaluate.process_group", stopped_on_the_way_out)


@pytest.mark.parametrize("lands", [sigterm_while_kept, sigterm_as_the_process_group_ends])
def test_a_stop_that_follows_a_failure_says_what_the_failure_kept(
    tiny_ckpt: Path, tmp_path: Path, monkeypatch, capsys, lands
) -> None:
    # torchrun's SIGTERM to rank 0 once a peer died follows the collective's failure, on which rank 0 keeps what
    # it scored: before, the stop's line said nothing was written.
    cache = tmp_path / "cache"
    stopped_after(monkeypatch, 1, RuntimeError("[gloo] Connection closed by peer"))
    lands(monkeypatch)
    with pytest.raises(SystemExit) as ended:
        evaluated(settings(tiny_ckpt, cache), tmp_path, "r.json")
    assert ended.value.code == 143
    [kept] = kept_files(cache)
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (
        f"error: evaluate.py stopped by SIGTERM; 8 of its 24 images were scored and kept in {kept}: the same "
        "command continues from there"
    )
