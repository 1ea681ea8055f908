"""cpu_threads=auto: sample.py and evaluate.py generate on the CPU threads the checkpoint's recipe trained with
(digits_cpu: one; on a 2-core VM two threads made DDPM sampling of 16 digits take 160 s instead of 31.6 s), else
on whichever of one thread or torch's default runs the network faster; cpu_threads=N and OMP_NUM_THREADS win."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from conftest import compose_config

from difflab.checkpoint import CONFIG_KEY
from difflab.diffusion.cpu_threads import fastest_thread_count, usable_cores
from difflab.run.evaluate import evaluate
from difflab.run.sample import sample


@pytest.fixture
def two_threads(monkeypatch: pytest.MonkeyPatch):
    """A process on two threads with no OMP_NUM_THREADS (the suite runs on one: set back afterwards)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def with_recipe_threads(tiny_ckpt: Path, path: Path, threads: object) -> Path:
    """A copy of tiny_ckpt whose stored recipe says cpu_threads=threads."""
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    ckpt[CONFIG_KEY]["cpu_threads"] = threads
    torch.save(ckpt, path)
    return path


def sampled_threads(ckpt: Path, out: Path, *overrides: str) -> int:
    """The cpu_threads a small sample.py run reports in its settings.json."""
    cfg = compose_config(
        "sample", [f"ckpt={ckpt}", "n=4", "sampler.steps=2", "device=cpu", f"out={out}", *overrides], out
    )
    sample(cfg)
    return json.loads((out / "settings.json").read_text())["cpu_threads"]


def test_sampling_uses_the_threads_the_checkpoint_trained_with(tiny_ckpt, tmp_path, two_threads):
    ckpt = with_recipe_threads(tiny_ckpt, tmp_path / "one.ckpt", 1)
    assert sampled_threads(ckpt, tmp_path / "auto") == 1
    assert torch.get_num_threads() == 2  # the caller's own count is back (a notebook, a test)


def test_an_explicit_thread_count_wins_over_the_recipe(tiny_ckpt, tmp_path, two_threads):
    ckpt = with_recipe_threads(tiny_ckpt, tmp_path / "one.ckpt", 1)
    assert sampled_threads(ckpt, tmp_path / "explicit", "cpu_threads=2") == 2


@pytest.mark.parametrize("where", ["command", "recipe"])
def test_more_threads_than_cores_run_on_the_cores_with_a_warning(
    tiny_ckpt, tmp_path, two_threads, caplog, where
):
    # Before, cpu_threads=5000 ran 30 times slower on 2 cores and cpu_threads=1000000 crashed the process in torch
    # (a segfault); a recipe trained on a 64-core node oversubscribed a laptop without a word.
    huge = 1_000_000
    ckpt = with_recipe_threads(tiny_ckpt, tmp_path / "big.ckpt", huge if where == "recipe" else 1)
    overrides = [f"cpu_threads={huge}"] if where == "command" else []
    with caplog.at_level("INFO", logger="difflab"):
        assert sampled_threads(ckpt, tmp_path / where, *overrides) == usable_cores()
    key = "cpu_threads" if where == "command" else "the checkpoint's recipe's cpu_threads"
    said = [r.getMessage() for r in caplog.records if "CPU cores this process may use" in r.getMessage()]
    # Once (review: twice, by sample.py and by its generation), and not "as the checkpoint's recipe trained".
    assert len(said) == 1 and said[0].startswith(f"{key}={huge} is more than the {usable_cores()} CPU cores")
    assert "as the checkpoint's recipe trained" not in caplog.text


def test_omp_num_threads_is_the_users_choice(tiny_ckpt, tmp_path, two_threads, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    ckpt = with_recipe_threads(tiny_ckpt, tmp_path / "one.ckpt", 1)
    assert sampled_threads(ckpt, tmp_path / "omp") == 2


def test_a_checkpoint_without_a_usable_recipe_count_is_measured(
    tiny_ckpt, tmp_path, two_threads, monkeypatch
):
    measured = []
    monkeypatch.setattr(
        "difflab.generation.threads.fastest_thread_count", lambda call: measured.append(call()) or 1
    )
    ckpt = with_recipe_threads(tiny_ckpt, tmp_path / "junk.ckpt", "rm -rf /")
    assert sampled_threads(ckpt, tmp_path / "measured") == 1
    assert measured and measured[0].shape == (4, 1, 8, 8)  # one call of the network on the batch it samples


@pytest.mark.parametrize(("seconds_per_call", "fastest"), [(lambda t: 0.01 * t, 1), (lambda t: 0.02 / t, 2)])
def test_the_faster_thread_count_is_kept(two_threads, seconds_per_call, fastest):
    def call() -> None:
        time.sleep(seconds_per_call(torch.get_num_threads()))

    assert fastest_thread_count(call) == fastest
    assert torch.get_num_threads() == fastest


def test_evaluate_generates_on_the_recipes_threads_and_reports_them(tiny_ckpt, tmp_path, two_threads):
    ckpt = with_recipe_threads(tiny_ckpt, tmp_path / "one.ckpt", 1)
    overrides = [f"ckpt={ckpt}", "n=4", "sampler.steps=2", "device=cpu", f"out={tmp_path / 'report.json'}"]
    small = [
        "metrics.num_reference=8",
        "metrics.kid_subset_size=4",
        f"metrics.cache_dir={tmp_path / 'cache'}",
    ]
    report = evaluate(compose_config("eval", [*overrides, *small], tmp_path))
    assert report["generated"]["cpu_threads"] == 1
    assert torch.get_num_threads() == 2
