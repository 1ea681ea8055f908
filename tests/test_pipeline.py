"""difflab.load: a checkpoint or an exported folder in Python, sampled exactly as sample.py samples it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import FAST_TRAIN, ROOT, compose_config, one_error_line, run_cli
from PIL import Image

import difflab
from difflab.generation import build_sampler
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


def test_n_left_out_is_sample_pys_default_and_the_same_call_gives_the_same_images(tiny_ckpt, tmp_path):
    """Before, pipe.sample() without n was Python's "missing 1 required positional argument: 'n'"."""
    pipe = difflab.load(tiny_ckpt)
    images = pipe.sample(steps=2)
    assert images.shape == (64, 8, 8, 1)  # conf/sample.yaml's n
    np.testing.assert_array_equal(images, sample_py(tiny_ckpt, tmp_path / "cli", "sampler.steps=2"))
    np.testing.assert_array_equal(pipe.sample(steps=2, seed=None), images)  # seed None: sample.py's seed 0


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpm_solver", "euler", "heun"])
def test_samplers_have_the_cli_defaults(tiny_ckpt, tmp_path, name):
    pipe = difflab.load(tiny_ckpt)
    cli = compose_config("sample", [f"sampler={name}"], tmp_path).sampler
    assert repr(pipe.make_sampler(name)) == repr(build_sampler(cli, pipe))  # sample.py's one way to build it
    assert repr(pipe.make_sampler()) == repr(
        build_sampler(compose_config("sample", [], tmp_path).sampler, pipe)
    )  # no sampler named: sample.py's default (ddim, 50 steps, clip_x0 auto: 1.0 for this pixel model)
    assert pipe.make_sampler().clip_x0 == 1.0


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


def pictures_and_mask(folder: Path) -> tuple[Path, Path]:
    """Two random 8x8 grey pictures in folder/pictures and a mask whose middle rows are to be generated."""
    rng = np.random.default_rng(0)
    (folder / "pictures").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / "pictures" / f"{i}.png")
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    return folder / "pictures", folder / "mask.png"


def test_load_edits_pictures_as_sample_py_does(tiny_ckpt, tmp_path):
    pictures, mask = pictures_and_mask(tmp_path)
    pipe = difflab.load(tiny_ckpt)
    repaint = ["inpaint.steps=10", "inpaint.jump_length=3", "inpaint.jump_n_sample=2"]
    expected = sample_py(
        tiny_ckpt, tmp_path / "inpaint", "mode=inpaint", f"image={pictures}", f"mask={mask}", "n=2", *repaint
    )
    inpaint = {"steps": 10, "jump_length": 3, "jump_n_sample": 2}
    got = pipe.sample(2, mode="inpaint", image=pictures, mask=mask, inpaint=inpaint, batch_size=3)
    np.testing.assert_array_equal(got, expected)
    args = ["mode=img2img", f"image={pictures}", "strength=0.5", "sampler.steps=10", "seed=3"]
    expected = sample_py(tiny_ckpt, tmp_path / "img2img", "n=3", *args)
    got = pipe.sample(3, mode="img2img", image=pictures, strength=0.5, steps=10, seed=3)
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="mode=inpaint needs mask="):
        pipe.sample(2, mode="inpaint", image=pictures)


def test_unknown_arguments_are_refused_in_one_line(tiny_ckpt):
    pipe = difflab.load(tiny_ckpt)
    with pytest.raises(ValueError, match=r"unknown argument step=20 \(did you mean steps\?\)") as error:
        pipe.sample(2, step=20)
    assert "\n" not in str(error.value)
    with pytest.raises(
        ValueError, match=r"unknown argument negative=.a one. \(did you mean negative_prompt\?\)"
    ):
        pipe.sample(2, negative="a one")
    with pytest.raises(ValueError, match=r"unknown argument inpaint.jumps=3"):
        pipe.sample(2, mode="inpaint", image="x.png", mask="m.png", inpaint={"jumps": 3})
    assert pipe.sample(1, sampler="dpm_solver", steps=2, order=1).shape == (
        1,
        8,
        8,
        1,
    )  # a knob of that sampler
    # Before: a TypeError ("got multiple values for argument 'core'") for a name the refusal itself listed.
    with pytest.raises(
        ValueError, match=r"^unknown argument core=None; .* ddim sampler's eta, timestep_spacing, clip_x0$"
    ) as error:
        pipe.sample(1, steps=2, core=None)
    assert "core" not in str(error.value).partition(";")[2]
    # Another sampler's knob names the sampler that takes it (before: "did you mean mode?", no hint for eta).
    with pytest.raises(ValueError, match=r"^unknown argument order=2 \(sampler='dpm_solver' takes it\); "):
        pipe.sample(1, steps=10, order=2)
    with pytest.raises(ValueError, match=r"^unknown argument eta=1.0 \(sampler='ddim' takes it\); "):
        pipe.sample(1, sampler="heun", eta=1.0)
    # Before: "order must be 1 or 2 (got 2)".
    with pytest.raises(ValueError, match=r"^DPM-Solver\+\+ order must be 1 or 2 \(got str '2'\)$"):
        pipe.sample(1, sampler="dpm_solver", steps=2, order="2")


def test_a_sampler_core_given_on_the_command_line_is_one_line(tiny_ckpt, tmp_path):
    # Before: Hydra's "Error executing job" and a TypeError traceback (core was taken for a sampler argument).
    result = run_cli("sample.py", f"ckpt={tiny_ckpt}", "n=1", "+sampler.core=1", f"out={tmp_path / 'out'}")
    assert result.returncode == 2 and "core" in one_error_line(result), result.stderr
    assert not (tmp_path / "out").exists()


def test_a_path_from_the_home_folder_loads(tiny_ckpt, tmp_path, monkeypatch):
    # Before: "checkpoint ~/models/tiny.ckpt does not exist".
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    shutil.copy(tiny_ckpt, tmp_path / "models" / "tiny.ckpt")
    assert difflab.load("~/models/tiny.ckpt").sample(1, steps=2).shape == (1, 8, 8, 1)


def test_unconditional_model_refuses_labels(tiny_ckpt):
    with pytest.raises(ValueError, match="unconditional"):
        difflab.load(tiny_ckpt).sample(2, labels=3)
    with pytest.raises(ValueError, match="unknown sampler 'ddimm'"):
        difflab.load(tiny_ckpt).sample(2, sampler="ddimm")
    # A name, not a path into conf/: before, "../sampler/heun" sampled and "../sample" raised a raw KeyError.
    for path in ("../sampler/heun", "../sample"):
        with pytest.raises(
            ValueError, match=f"^unknown sampler '{re.escape(path)}'; choose one of ddim, ddpm, "
        ):
            difflab.load(tiny_ckpt).sample(2, sampler=path)


def test_samples_that_are_not_finite_are_refused_without_claiming_a_file(tiny_ckpt):
    """pipe.sample writes no file: its refusal says no images were returned (before: "nothing was written")."""
    pipe = difflab.load(tiny_ckpt)
    next(pipe.net.parameters()).data.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"not finite .*; no images were returned$"):
        pipe.sample(2, steps=2)


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


def test_a_run_folder_loads_its_last_checkpoint(tiny_ckpt, tmp_path):
    run = tiny_ckpt.parent.parent
    from_run = difflab.load(run).sample(3, sampler="ddim", steps=3)
    np.testing.assert_array_equal(from_run, difflab.load(tiny_ckpt).sample(3, sampler="ddim", steps=3))
    np.testing.assert_array_equal(sample_py(run, tmp_path / "cli", "n=3", "sampler.steps=3"), from_run)
    with pytest.raises(FileNotFoundError, match=r"is not a difflab model folder .* nor a run folder"):
        difflab.load(tmp_path)


def test_load_from_checkpoint_points_to_difflab_load(tiny_ckpt):
    with pytest.raises(NotImplementedError, match=r"use difflab\.load\(path\)"):
        DiffusionModule.load_from_checkpoint(tiny_ckpt)


def test_import_difflab_stays_light():
    # dir() lists load before its first use (tab completion in a notebook; before, only 'Any', 'TYPE_CHECKING').
    code = (
        "import sys, difflab; print('torch' in sys.modules, 'load' in dir(difflab), callable(difflab.load))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "True", "True"]


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ({"guidance": -1.0}, r"^guidance=-1.0 must be at least 0.0$"),
        ({"guidance": float("nan")}, r"^guidance=nan must be a finite number$"),
        ({"batch_size": 0}, r"^batch_size=0 must be at least 1 \(or auto\)$"),
        ({"seed": 1.5}, r"^seed=1.5 is not a whole number$"),
        ({"seed": -1}, r"^seed=-1 must be at least 0$"),
        ({"cpu_threads": 0}, r"^cpu_threads=0 must be at least 1 \(or auto\)$"),
        # Sample i's noise comes from (seed, i) mod 2**63: before, seed=2**64 gave seed 0's images.
        ({"seed": 2**64}, r"^seed=18446744073709551616 must be at most 9223372036854775807$"),
        # Not a number, named as what it is: before, "guidance=2.0 is not a number".
        ({"guidance": "2.0"}, r"^guidance='2.0' is not a number$"),
        # Before, both ran: as strength 1.0 and 0.5.
        ({"mode": "img2img", "image": "p.png", "strength": True}, r"^strength=True is not a number$"),
        ({"mode": "img2img", "image": "p.png", "strength": "0.5"}, r"^strength='0.5' is not a number$"),
        # Review: an array of several raised NumPy's own ValueError (torch's RuntimeError), naming no argument.
        ({"mode": "img2img", "image": "p.png", "strength": np.array([0.5, 0.6])}, r"^strength=array\("),
    ],
)
def test_bad_values_are_refused_as_sample_py_refuses_them(tiny_ckpt, argument, message):
    # Before, guidance=-1 sampled a class model silently, guidance=nan blamed the checkpoint's weights,
    # batch_size=0 failed inside range() and seed=1.5 was taken as seed 1.
    with pytest.raises(ValueError, match=message):
        difflab.load(tiny_ckpt).sample(2, steps=2, **argument)


def test_numpy_numbers_are_taken_as_the_numbers_they_hold(tiny_ckpt):
    # Before, "n=2 must be a whole number of at least 1" and "seed=3 is not a whole number" for np.int64s.
    pipe = difflab.load(tiny_ckpt)
    given = pipe.sample(
        np.int64(2), steps=np.int64(2), seed=np.int64(3), guidance=np.float32(1.0), eta=np.float64(1)
    )
    np.testing.assert_array_equal(given, pipe.sample(2, steps=2, seed=3, eta=1.0))


def test_a_picture_without_a_mode_is_refused_not_ignored(tiny_ckpt, tmp_path):
    with pytest.raises(ValueError, match=r"^image='p.png' given, but mode=sample does not read it"):
        difflab.load(tiny_ckpt).sample(2, image="p.png")
    with pytest.raises(ValueError, match=r"^mask='m.png' given, but mode=img2img does not read it"):
        difflab.load(tiny_ckpt).sample(2, mode="img2img", image="p.png", mask="m.png")


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"steps": "abc"}, "steps='abc' is not a whole number"),
        ({"sampler": "ddim", "eta": -1}, "eta=-1 must be at least 0.0"),
        ({"sampler": "heun", "s_churn": "x"}, "s_churn='x' is not a number"),
        (
            {"mode": "inpaint", "image": "p.png", "mask": "m.png", "inpaint": {"steps": "abc"}},
            "inpaint.steps='abc' is not a whole number",
        ),
    ],
)
def test_a_bad_sampler_setting_is_named_as_sample_py_names_it(tiny_ckpt, given, message):
    # Before: Python's own "invalid literal for int() with base 10: 'abc'", naming no argument.
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        difflab.load(tiny_ckpt).sample(2, **given)


def test_sampler_settings_for_inpaint_are_refused_not_ignored(tiny_ckpt):
    pipe = difflab.load(tiny_ckpt)
    for given, named in [({"sampler": "heun"}, "sampler='heun'"), ({"steps": 2}, "steps=2")]:
        with pytest.raises(ValueError, match=rf"^{named} given, but mode=inpaint does not read it \(RePaint"):
            pipe.sample(2, mode="inpaint", image="p.png", mask="m.png", **given)


def test_a_strength_outside_img2img_is_refused_not_ignored(tiny_ckpt):
    # Before, strength=0.3 without mode="img2img" sampled as if it was not given.
    with pytest.raises(
        ValueError, match=r"^strength=0.3 given, but mode=sample does not read it \(only mode=img2img"
    ):
        difflab.load(tiny_ckpt).sample(2, steps=2, strength=0.3)


def test_inpaint_settings_outside_inpaint_are_refused_not_ignored(tiny_ckpt):
    # Before, inpaint={"steps": 100} without mode="inpaint" sampled as if it was not given.
    with pytest.raises(
        ValueError, match=r"^inpaint.steps=100 given, but mode=img2img does not read it \(only mode=inp"
    ):
        difflab.load(tiny_ckpt).sample(2, steps=2, mode="img2img", image="p.png", inpaint={"steps": 100})


def test_a_picture_given_as_an_object_instead_of_a_path_is_one_line(tiny_ckpt):
    import numpy as np
    from PIL import Image

    pipe = difflab.load(tiny_ckpt)
    for image in (Image.new("L", (8, 8)), np.zeros((8, 8))):
        with pytest.raises(ValueError) as error:
            pipe.sample(2, mode="img2img", image=image)
        kind = type(image).__name__
        assert str(error.value) == (
            f"image= takes the path of a picture or of a folder of them, not a {kind}: save it (PNG) and pass its path"
        )
    with pytest.raises(
        ValueError, match="^mask= takes the path of a picture or of a folder of them, not a ndarray"
    ):
        pipe.sample(2, mode="inpaint", image="p.png", mask=np.ones((8, 8)))
    # Paths in a list (image=[a.png,b.png] on sample.py's command line): before, "save it (PNG)", of PNGs.
    with pytest.raises(ValueError, match=r"^image= takes .* not a list: put them in one folder$"):
        pipe.sample(2, mode="img2img", image=["a.png", "b.png"])


def test_repaint_settings_that_are_not_a_mapping_are_one_line(tiny_ckpt, tmp_path):
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "p.png")
    Image.new("L", (8, 8), 255).save(tmp_path / "m.png")
    pipe = difflab.load(tiny_ckpt)
    edit = {"mode": "inpaint", "image": str(tmp_path / "p.png"), "mask": str(tmp_path / "m.png")}
    with pytest.raises(ValueError) as error:
        pipe.sample(1, inpaint=5, **edit)
    assert (
        str(error.value)
        == "inpaint=5 is not RePaint's settings: give a mapping of steps, jump_length, jump_n_sample"
    )


@pytest.mark.parametrize("given", ["", "  "])
def test_load_of_an_empty_path_is_refused_not_read_as_the_current_folder(
    given, tiny_ckpt, tmp_path, monkeypatch
):
    # Before, "" was the current folder: a run folder there was loaded without a word.
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(tiny_ckpt, tmp_path / "checkpoints" / "last.ckpt")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        ValueError, match="^difflab.load got an empty path: give a checkpoint, a run folder or a"
    ):
        difflab.load(given)


@pytest.mark.parametrize("given", [None, 3])
def test_load_of_something_that_is_no_path_names_what_it_takes(given):
    # Before, pathlib's "expected str, bytes or os.PathLike object, not NoneType", naming no argument.
    with pytest.raises(TypeError) as error:
        difflab.load(given)
    assert str(error.value) == (
        f"difflab.load takes a path (str or Path) to a checkpoint or model folder, got {given!r}"
    )
