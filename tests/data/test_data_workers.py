"""A data loader worker that dies (the machine's out-of-memory killer, a container's small /dev/shm) ends a run
with one line naming what to change, not torch's traceback through Lightning's loops."""

from __future__ import annotations

import os
import re
import signal

import pytest
from conftest import FAST_TRAIN, compose_config
from torch.utils.data import get_worker_info

from difflab.data import in_memory
from difflab.data.errors import worker_death
from difflab.run.errors import one_line
from difflab.run.train import train


def test_a_data_worker_killed_is_one_line_naming_what_to_lower(tmp_path, monkeypatch):
    real = in_memory.ImageTensors.batch

    def dying(self, indices):  # what the out-of-memory killer does to a worker
        if get_worker_info() is not None:  # in a worker process only: the run's own process goes on
            os.kill(os.getpid(), signal.SIGKILL)
        return real(self, indices)

    monkeypatch.setattr(in_memory.ImageTensors, "batch", dying)
    run = tmp_path / "run"
    with pytest.raises(ValueError) as raised:
        train(compose_config("train", [*FAST_TRAIN, "data.num_workers=1"], run))
    # torch tells the kill by the worker's signal or, first, by its silence: either way, what to lower.
    assert re.fullmatch(
        r"a data loader worker \(pid \d+\) (was killed by signal: Killed|exited unexpectedly), most often by "
        r"the machine's out-of-memory killer: lower data\.num_workers \(each worker holds its own batches\) or "
        r"data\.batch_size( \(data\.num_workers=0 shows any other error in this process\))?",
        one_line(raised.value),
    ), one_line(raised.value)
    assert not run.exists()  # a refused run leaves nothing behind


def test_a_worker_out_of_shared_memory_names_dev_shm_and_other_errors_are_left_alone():
    torch_says = RuntimeError(  # torch's words for a worker a container's small /dev/shm killed
        "DataLoader worker (pid 4242) is killed by signal: Bus error. It is possible that dataloader's workers are "
        "out of shared memory. Please try to raise your shared memory limit."
    )
    assert str(worker_death(torch_says)) == (
        "a data loader worker (pid 4242) was killed by signal: Bus error, most often out of shared memory "
        "(/dev/shm: 64 MB in a default Docker container): raise it (docker run --shm-size=8g) or lower "
        "data.num_workers"
    )
    assert worker_death(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    assert worker_death(ValueError("DataLoader worker (pid 1) is killed by signal: Killed.")) is None


def test_an_error_raised_in_a_worker_is_its_own_line_not_torchs_wrapping(tmp_path):
    # Before: "error: Caught DataError in DataLoader worker process 0." (data.num_workers=0 showed the real line).
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "pictures"
    folder.mkdir()
    for i in range(5):
        path = folder / f"cut{i}.jpg"
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(path)
        whole = path.read_bytes()
        path.write_bytes(whole[: len(whole) // 2])  # the header reads, the pixels do not
    overrides = [*FAST_TRAIN, "data=folder", f"data.root={folder}", "data.num_workers=1"]
    with pytest.raises(ValueError) as raised:
        train(compose_config("train", overrides, tmp_path / "run"))
    assert re.match(r"none of the \d images can be decoded \(first: .*cut\d\.jpg\)$", one_line(raised.value))
