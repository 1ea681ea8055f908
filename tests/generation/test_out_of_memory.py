"""A device that runs out of memory is one line that says what to lower, not torch's traceback: in sample.py (which
keeps what it made, to resume in smaller batches), evaluate.py, difflab.load(...).sample() and a training step.
No GPU here: torch.OutOfMemoryError, what CUDA's allocator raises, is raised by the network after a few calls."""

from __future__ import annotations

import json
import logging
import pickle

import pytest
import torch
from conftest import FAST_TRAIN, compose_config, files_of

import difflab
from difflab.generation import images as generation_images
from difflab.generation.memory import OutOfDeviceMemory
from difflab.io.results import IN_USE
from difflab.run.errors import one_line
from difflab.run.evaluate import evaluate
from difflab.run.sample import sample
from difflab.run.train import train
from difflab.training.module import DiffusionModule

CUDA_MESSAGE = (  # as torch 2.x words it
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.15 GiB of which 1.23 GiB is "
    "free. Including non-PyTorch memory, this process has 77.90 GiB memory in use. Of the allocated memory 75.10 "
    "GiB is allocated by PyTorch, and 1.20 GiB is reserved by PyTorch but unallocated. If reserved but unallocated "
    "memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."
)
FIGURES = " (2.00 GiB more asked for, 1.23 GiB of 79.15 GiB free)"  # what the one line keeps of it


# The CPU's allocator says it in a plain RuntimeError (MPS's too).
CPU_MESSAGE = (
    "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to "
    "allocate 40000000000000 bytes. Error code 12 (Cannot allocate memory)"
)


@pytest.fixture
def memory_runs_out_at_batch(monkeypatch):
    """Make generation's batches run out of memory from batch `k` (0-based) on, as CUDA's allocator says it (or
    the CPU's: `error`)."""

    def arm(k: int, error: Exception | None = None) -> None:
        real = generation_images.in_batches

        def in_batches(*args, **kwargs):
            for i, batch in enumerate(real(*args, **kwargs)):
                if i >= k:
                    raise error or torch.OutOfMemoryError(CUDA_MESSAGE)
                yield batch

        monkeypatch.setattr(generation_images, "in_batches", in_batches)

    return arm


@pytest.mark.parametrize("allocator", ["cuda", "cpu"])
def test_a_pipeline_out_of_memory_is_one_line_naming_the_batch_size(
    tiny_ckpt, memory_runs_out_at_batch, allocator
):
    memory_runs_out_at_batch(0, RuntimeError(CPU_MESSAGE) if allocator == "cpu" else None)
    pipe = difflab.load(tiny_ckpt)
    with pytest.raises(torch.OutOfMemoryError) as raised:  # still what a caller retrying smaller catches
        pipe.sample(8, batch_size=4, steps=2)
    assert isinstance(raised.value, ValueError)  # a user error: one line from the entry points
    figures = FIGURES if allocator == "cuda" else ""  # the CPU's allocator gives none
    assert one_line(raised.value) == (
        f"out of memory on cpu making batches of 4{figures}: give a smaller batch_size= (auto finds one that fits)"
    )


def test_evaluate_py_out_of_memory_is_one_line_and_keeps_what_it_scored_to_continue_in_smaller_batches(
    tiny_ckpt, tmp_path, memory_runs_out_at_batch, monkeypatch, caplog
):
    memory_runs_out_at_batch(1)
    report = tmp_path / "report.json"
    small = [
        "metrics.num_reference=8",
        "metrics.kid_subset_size=4",
        f"metrics.cache_dir={tmp_path / 'cache'}",
    ]
    common = [f"ckpt={tiny_ckpt}", "n=8", "sampler.steps=2", f"out={report}", *small]
    with pytest.raises(ValueError) as raised:
        evaluate(compose_config("eval", [*common, "batch_size=4"], tmp_path))
    [kept] = (tmp_path / "cache" / "unfinished").glob("*.pt")
    assert one_line(raised.value) == (
        f"out of memory on cpu making batches of 4{FIGURES}: give a smaller batch_size= (auto finds one that fits); "
        f"4 of its 8 images were scored and kept in {kept}: the same command continues from there"
    )
    assert not report.exists()
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger="difflab"):
        evaluate(compose_config("eval", [*common, "batch_size=2"], tmp_path))
    assert (
        "4 of 8 images were scored; generating the other 4 in batches of 2, not 4 as it was started"
        in caplog.text
    )
    assert report.exists() and not kept.exists()


def test_sample_py_out_of_memory_keeps_what_it_made_and_resumes_in_smaller_batches(
    tiny_ckpt, tmp_path, memory_runs_out_at_batch, monkeypatch
):
    common = [f"ckpt={tiny_ckpt}", "n=12", "sampler.steps=2", "cpu_threads=1"]
    whole = tmp_path / "whole"
    sample(compose_config("sample", [*common, "batch_size=4", f"out={whole}"], whole))
    out = tmp_path / "out"
    memory_runs_out_at_batch(2)
    with pytest.raises(ValueError) as raised:
        sample(compose_config("sample", [*common, "batch_size=4", f"out={out}"], out))
    assert one_line(raised.value) == (
        f"out of memory on cpu making batches of 4{FIGURES}: give a smaller batch_size= (auto finds one that "
        f"fits); what it had made is kept in {out} (unfinished): run the same command with resume=true to finish it"
    )
    kept = files_of(out)
    batch_0, batches_0_1 = ([f"images/{i:05d}.png" for i in range(k)] for k in (4, 8))
    on_disk = sorted(n for n in kept if n.startswith("images/"))  # batch 1 may have been half written
    assert IN_USE in kept and on_disk[:4] == batch_0 and set(on_disk) <= set(batches_0_1)
    monkeypatch.undo()
    sample(compose_config("sample", [*common, "batch_size=2", f"out={out}", "resume=true"], out))
    finished, expected = files_of(out), files_of(whole)
    assert sorted(finished) == sorted(expected)
    assert all(finished[name] == kept[name] for name in batch_0)  # a whole batch on disk is kept as it was


def test_a_training_step_out_of_memory_is_one_line_and_a_fresh_run_leaves_nothing(tmp_path, monkeypatch):
    def out_of_memory(self, batch, batch_idx):
        raise torch.OutOfMemoryError(CUDA_MESSAGE)

    monkeypatch.setattr(DiffusionModule, "training_step", out_of_memory)
    run = tmp_path / "run"
    with pytest.raises(ValueError) as raised:
        train(compose_config("train", FAST_TRAIN, run))
    assert one_line(raised.value) == (
        f"out of memory on cpu in a training step of data.batch_size=16 images per device{FIGURES}: lower "
        "data.batch_size (trainer.accumulate_grad_batches=2 with half of it keeps the step's batch), or use "
        "trainer.precision=bf16-mixed"
    )
    assert not run.exists()  # a refused run leaves nothing behind


def test_a_callbacks_sampling_out_of_memory_during_training_names_the_callbacks_batch_sizes(
    tmp_path, memory_runs_out_at_batch
):
    memory_runs_out_at_batch(0)
    with pytest.raises(ValueError) as raised:
        train(compose_config("train", FAST_TRAIN, tmp_path / "run"))
    # The grid due at step 2 ran out of memory before step 2's checkpoint (Lightning writes checkpoints last): the
    # step is kept all the same (training.failure_checkpoint).
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert one_line(raised.value) == (
        f"out of memory on cpu making batches of 64 while a callback sampled{FIGURES}: lower "
        "callbacks.sample_grid.batch_size or callbacks.fid.batch_size (auto finds one that fits); "
        f"{last} holds step 2: resume with ckpt_path=last hydra.run.dir={tmp_path / 'run'} once it is fixed"
    )


def test_other_runtime_errors_in_generation_keep_their_traceback(tiny_ckpt, memory_runs_out_at_batch):
    memory_runs_out_at_batch(0, RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x8 and 9x8)"))
    with pytest.raises(RuntimeError) as raised:
        difflab.load(tiny_ckpt).sample(8, batch_size=4, steps=2)
    assert not isinstance(raised.value, ValueError)  # a bug: not turned into a user's error


def test_a_run_out_of_memory_after_it_logged_keeps_its_folder(tmp_path, monkeypatch):
    """Out of memory at step 3 (a longer batch, a validation): the run's logs say what happened before it, so its
    folder stays, though no checkpoint was written yet (a refusal before anything was logged gives it back)."""
    real = DiffusionModule.training_step

    def out_of_memory_at_step_3(self, batch, batch_idx):
        if self.global_step >= 3:
            raise torch.OutOfMemoryError(CUDA_MESSAGE)
        return real(self, batch, batch_idx)

    monkeypatch.setattr(DiffusionModule, "training_step", out_of_memory_at_step_3)
    run = tmp_path / "run"
    overrides = [*FAST_TRAIN, "callbacks.model_checkpoint.every_n_train_steps=100"]
    with pytest.raises(ValueError, match=r"^out of memory on cpu in a training step"):
        train(compose_config("train", overrides, run))
    assert not any(run.rglob("*.ckpt"))
    assert any((run / "samples").glob("*.png")) and (run / "csv" / "metrics.csv").is_file()  # step 2's grid
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {entry["step"] for entry in logged if "train/loss" in entry} == {0, 1, 2}


def test_a_callbacks_out_of_memory_on_a_numbered_gpu_names_it_whole():
    from difflab.training.out_of_memory import out_of_memory

    error = OutOfDeviceMemory(torch.device("cuda:1"), 256)
    assert pickle.loads(pickle.dumps(error)).args == error.args
    assert str(out_of_memory(error, torch.device("cuda:1"), 16)).startswith(
        "out of memory on cuda:1 making batches of 256 while a callback sampled: lower "
    )
