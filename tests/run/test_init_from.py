"""init_from= a difflab model: a fresh run starts from the (EMA) weights of a train.py checkpoint, a run folder or
a safetensors export of the configured network, U-Net or DiT. Before, only a diffusers UNet2DModel folder was
taken: a checkpoint was answered "no such folder", and a DiT run could not be started from at all."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import CLI_FAST, FAST_TRAIN, compose_config, one_error_line, run_cli

from difflab.checkpoint_file import read_model
from difflab.run.prepare import prepare
from difflab.run.train import build_module, initialise_from, train
from difflab.runs import init_weights

DIT = ["model=dit_tiny"]


@pytest.fixture(scope="module")
def dit_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("dit") / "run"
    train(compose_config("train", [*FAST_TRAIN, *DIT, "trainer.max_steps=2"], run))
    return run


def test_a_run_reads_its_source_once(dit_run, tmp_path, monkeypatch) -> None:
    # Before, twice: checked in the preparation, then read again to be loaded (a large model's file, twice).
    reads = []
    monkeypatch.setattr(init_weights, "read_model", lambda *args: reads.append(args) or read_model(*args))
    run = tmp_path / "new"
    train(compose_config("train", [*FAST_TRAIN, *DIT, "trainer.max_steps=1", f"init_from={dit_run}"], run))
    assert len(reads) == 1
    assert (run / "checkpoints" / "last.ckpt").is_file()


# A DiT's diffusers export: before, "only difflab.models.UNet maps to diffusers' UNet2DModel".
@pytest.mark.parametrize("given", ["run folder", "checkpoint", "safetensors folder", "diffusers folder"])
def test_a_fresh_run_starts_from_the_ema_weights_of_a_difflab_model(dit_run, tmp_path, given) -> None:
    source = {"run folder": dit_run, "checkpoint": dit_run / "checkpoints" / "last.ckpt"}.get(given)
    if source is None:
        source, form = tmp_path / "exported", given.split()[0]
        assert run_cli("export.py", f"ckpt={dit_run}", f"format={form}", f"out={source}").returncode == 0
    cfg = compose_config("train", [*FAST_TRAIN, *DIT, f"init_from={source}"], tmp_path / "new")
    module = build_module(cfg)
    settings = prepare(cfg, tmp_path / "new")
    initialise_from(cfg, module, settings)
    assert settings.init_weights == {}  # handed over: no second copy of the network kept while the run trains
    ema = read_model(dit_run).state
    assert ema.keys() == module.net.state_dict().keys()
    for name, value in module.net.state_dict().items():
        assert torch.equal(value, ema[name]), name


def test_a_source_of_another_network_is_one_line_naming_its_model_before_the_run_folder(dit_run, tmp_path):
    run = tmp_path / "run"
    result = run_cli("train.py", *CLI_FAST, f"init_from={dit_run}", f"hydra.run.dir={run}")
    line = one_error_line(result)
    assert line.startswith(f"error: init_from={dit_run} does not fit the configured model: ")
    # its model= option where the checkpoint records one (a train.py run), else its settings (trained in-process)
    assert f"; configure the network of checkpoint {dit_run / 'checkpoints' / 'last.ckpt'} (a DiT: " in line
    assert "model.depth=4" in line
    assert not run.exists()


def test_a_dits_diffusers_export_is_refused_with_settings_that_can_be_typed_and_its_part_points_at_it(
    dit_run, tmp_path
):
    exported = tmp_path / "exported"
    assert run_cli("export.py", f"ckpt={dit_run}", "format=diffusers", f"out={exported}").returncode == 0
    cfg = compose_config(
        "train", [*FAST_TRAIN, *DIT, "model.depth=3", f"init_from={exported}"], tmp_path / "a"
    )
    with pytest.raises(ValueError) as raised:
        prepare(cfg, tmp_path / "a")
    # Before, also model.cond_channels=0, a key train.py refuses.
    assert f"configure the network of diffusers folder {exported} (a DiT: " in str(raised.value)
    assert "model.depth=4" in str(raised.value) and "cond_channels" not in str(raised.value)
    cfg = compose_config(
        "train", [*FAST_TRAIN, *DIT, f"init_from={exported / 'transformer'}"], tmp_path / "b"
    )
    # Before, "only difflab.models.UNet maps to diffusers' UNet2DModel".
    with pytest.raises(FileNotFoundError, match=f"give the pipeline's folder, {exported}$"):
        prepare(cfg, tmp_path / "b")
    # A latent model's pipeline (a vae/ beside) is read with it: the part points at the pipeline's folder too, whose
    # refusal, where its vae/ holds no autoencoder, says so (before, both sent the user to the train.py checkpoint).
    (exported / "vae").mkdir()
    with pytest.raises(FileNotFoundError, match=f"give the pipeline's folder, {exported}$"):
        prepare(cfg, tmp_path / "b")
    cfg = compose_config("train", [*FAST_TRAIN, *DIT, f"init_from={exported}"], tmp_path / "c")
    with pytest.raises(
        ValueError, match=r"is a latent diffusion pipeline \(it names a vae/\): one is read with the "
    ):
        prepare(cfg, tmp_path / "c")
    # A path that is not there is said as such for a DiT too (before, "only difflab.models.UNet maps to diffusers'
    # UNet2DModel (this model is difflab.models.DiT)").
    cfg = compose_config(
        "train", [*FAST_TRAIN, *DIT, f"init_from={tmp_path / 'no_such_dir'}"], tmp_path / "d"
    )
    with pytest.raises(FileNotFoundError, match=r"no_such_dir: no such file or folder"):
        prepare(cfg, tmp_path / "d")


def test_the_refusal_names_the_sources_settings_that_differ_from_the_configured_ones(tmp_path):
    # Before: "(model=unet_tiny)" alone, for a source trained with model.base_channels=32, which the command had
    # set otherwise: following the hint gave the same error again.
    from difflab.runs.init_weights import _its_network

    source = {
        "choices": {"model": "unet_tiny"},
        "model": {"_target_": "UNet", "base_channels": 32, "num_classes": 10},
    }
    source["data"] = {"condition": "labels"}
    now = {"model": {"_target_": "UNet", "base_channels": 16, "num_classes": None}, "condition": None}
    assert (
        _its_network(source, now)
        == "model=unet_tiny model.base_channels=32 model.num_classes=10 data.condition=labels"
    )
    # A pixel network's input is the data's: before, model.in_channels=1 model.image_size=8, which passed here and
    # failed at step 1 on the 3-channel 32-px images; a latent network's is the autoencoder's.
    source["model"] |= {"in_channels": 1, "image_size": 8}
    now["model"] |= {"in_channels": 3, "image_size": 32}
    assert _its_network(source, now).endswith(
        "model.num_classes=10 data.channels=1 data.image_size=8 data.condition=labels"
    )
    # A latent network's is its autoencoder's and data's: before, model.in_channels=1 model.image_size=8, which
    # use_latents overwrote with the latent shape of the data.image_size given (a 2x2-latent net from 8x8 weights).
    source["autoencoder"] = now["autoencoder"] = "ae.ckpt"
    source["data"]["image_size"] = 32
    assert "autoencoder=ae.ckpt data.image_size=32 " in _its_network(source, now)
    assert "model.image_size" not in _its_network(source, now)


def test_a_source_trained_for_another_prediction_type_is_warned_of_and_trains(dit_run, tmp_path):
    run = tmp_path / "run"
    args = [o for o in CLI_FAST if not o.startswith("model=")]
    result = run_cli(
        "train.py", *args, *DIT, "prediction_type=v", f"init_from={dit_run}", f"hydra.run.dir={run}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    said = result.stdout + result.stderr
    assert (
        f"init_from={dit_run} was trained with other settings than this run's: prediction_type=v (checkpoint: epsilon)"
        in said
    )
    assert f"initialised the network from the weights of {dit_run}" in said
