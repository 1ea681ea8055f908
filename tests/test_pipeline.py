"""difflab.load: a checkpoint or an exported folder in Python, sampled exactly as sample.py samples it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_TRAIN, ROOT, compose_config
from hydra.utils import instantiate

import difflab
from difflab.run.export import export
from difflab.run.sample import sample
from difflab.run.train import train
from difflab.training import DiffusionModule


def sample_py(ckpt: Path, out: Path, *overrides: str) -> np.ndarray:
    """What `sample.py ckpt=… out=… <overrides>` writes to samples.npz."""
    sample(compose_config("sample", [f"ckpt={ckpt}", f"out={out}", *overrides], out))
    return np.load(out / "samples.npz")["images"]


def test_load_samples_what_sample_py_samples(tiny_ckpt, tmp_path):
    pipe = difflab.load(tiny_ckpt)
    assert pipe.weights == "ema" and pipe.condition is None and pipe.sample_shape == (1, 8, 8)
    expected = sample_py(
        tiny_ckpt, tmp_path / "cli", "n=5", "sampler=dpm_solver", "sampler.steps=3", "seed=7"
    )
    # Another batch size: sample i depends only on (seed, i).
    got = pipe.sample(5, sampler="dpm_solver", steps=3, seed=7, batch_size=2)
    assert got.dtype == np.uint8 and got.shape == (5, 8, 8, 1)
    np.testing.assert_array_equal(got, expected)
    tensor = pipe.sample(2, sampler="dpm_solver", steps=3, seed=7, output="tensor")
    assert tensor.shape == (2, 1, 8, 8) and float(tensor.abs().max()) <= 1.0
    pictures = pipe.sample(2, sampler="dpm_solver", steps=3, seed=7, output="pil")
    np.testing.assert_array_equal(np.asarray(pictures[1]), expected[1, ..., 0])


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpm_solver", "euler", "heun"])
def test_samplers_have_the_cli_defaults(tiny_ckpt, tmp_path, name):
    pipe = difflab.load(tiny_ckpt)
    cli = compose_config("sample", [f"sampler={name}"], tmp_path).sampler
    expected = instantiate(cli)(pipe.schedule, prediction_type=pipe.prediction_type)
    assert repr(pipe.make_sampler(name)) == repr(expected)
    assert repr(pipe.make_sampler()) == repr(
        instantiate(compose_config("sample", [], tmp_path).sampler)(pipe.schedule)
    )  # no sampler named: sample.py's default (ddim, 50 steps, clip_x0 1.0)


def test_class_conditional_model_samples_like_sample_py(tmp_path):
    run = tmp_path / "run"
    train(compose_config("train", [*FAST_TRAIN, "model.num_classes=10"], run))
    ckpt = run / "checkpoints" / "last.ckpt"
    args = ["n=4", "sampler=ddim", "sampler.steps=2", "labels=[3,7]", "guidance=3.0"]
    expected = sample_py(ckpt, tmp_path / "cli", *args)
    pipe = difflab.load(ckpt)
    assert (pipe.condition, pipe.num_classes) == ("labels", 10)
    got = pipe.sample(4, sampler="ddim", steps=2, labels=[3, 7], guidance=3.0)
    np.testing.assert_array_equal(got, expected)
    # Guidance reaches the net (after 4 steps the difference is small: floats, and no clipping to hide it).
    guided, plain = (
        pipe.sample(4, sampler="ddim", steps=2, labels=[3, 7], guidance=s, output="tensor", clip_x0=None)
        for s in (3.0, 1.0)
    )
    assert not guided.equal(plain)
    with pytest.raises(ValueError, match="knows classes 0..9"):
        pipe.sample(2, labels=[12])


def test_unconditional_model_refuses_labels(tiny_ckpt):
    with pytest.raises(ValueError, match="unconditional"):
        difflab.load(tiny_ckpt).sample(2, labels=3)
    with pytest.raises(ValueError, match="unknown sampler 'ddimm'"):
        difflab.load(tiny_ckpt).sample(2, sampler="ddimm")


def test_safetensors_folder_loads_without_pickle(tiny_ckpt, tmp_path):
    folder = tmp_path / "model"
    export(compose_config("export", [f"ckpt={tiny_ckpt}", "format=safetensors", f"out={folder}"], tmp_path))
    assert sorted(p.name for p in folder.iterdir()) == ["difflab_config.json", "model.safetensors"]
    record = json.loads((folder / "difflab_config.json").read_text())
    assert "root" not in record["config"]["data"] and "paths" not in record["config"]  # no machine paths
    from_folder = difflab.load(folder).sample(3, sampler="ddim", steps=3)
    np.testing.assert_array_equal(from_folder, difflab.load(tiny_ckpt).sample(3, sampler="ddim", steps=3))
    # sample.py reads the folder too.
    np.testing.assert_array_equal(sample_py(folder, tmp_path / "cli", "n=3", "sampler.steps=3"), from_folder)

    record["config"]["model"]["_target_"] = "os.system"
    (folder / "difflab_config.json").write_text(json.dumps(record))
    with pytest.raises(ValueError, match=r"model\._target_=os\.system is not a difflab model"):
        difflab.load(folder)


def test_load_from_checkpoint_points_to_difflab_load(tiny_ckpt):
    with pytest.raises(NotImplementedError, match=r"use difflab\.load\(path\)"):
        DiffusionModule.load_from_checkpoint(tiny_ckpt)


def test_import_difflab_stays_light():
    code = "import sys, difflab; print('torch' in sys.modules, callable(difflab.load))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "True"]
