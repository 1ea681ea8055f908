"""benchmarks/gpu_check.py is correct before its first GPU run: every row runs on the CPU with tiny sizes (CUDA-only
rows say why they are skipped), a failing row fails the check, and the table is written as JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_every_row_runs_on_the_cpu_and_the_table_is_written(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    assert gpu_check_module().main(["--device", "cpu", "--tiny", "--json", str(out)]) == 0
    table = json.loads(out.read_text())
    rows = {(r["section"], r["name"]): r for r in table["rows"]}
    assert table["failed"] == 0 and table["device"] == "cpu"
    assert {r["section"] for r in table["rows"]} == {
        "train step", "batch_size=auto", "out of memory", "training run", "ddp", "shared sampling", "sampling",
    }  # fmt: skip
    unet = {name: r for (section, name), r in rows.items() if section == "train step" and "unet" in name}
    for name, row in unet.items():
        if "tf32" in name:
            assert row["status"] == "skipped: TF32 is a CUDA (Ampere and newer) mode"
        else:  # both libraries measured side by side, ratio of their rates
            assert row["status"] == "ok", row
            values = row["values"]
            assert values["difflab_img_per_s"] > 0 and values["diffusers_img_per_s"] > 0
            assert values["ratio"] == pytest.approx(
                values["difflab_img_per_s"] / values["diffusers_img_per_s"]
            )
    assert any("compiled" in name and r["values"]["backend"] == "aot_eager" for name, r in unet.items())
    # The DiT rows run beside diffusers' DiTTransformer2DModel (the tiny DiT here, DiT-S/2 on a GPU).
    dit = [r for (section, name), r in rows.items() if section == "train step" and "dit_" in name]
    assert dit and all(r["status"] == "ok" or r["status"].startswith("skipped: TF32") for r in dit), dit
    (memory,) = [r for (section, _), r in rows.items() if section == "out of memory"]
    assert memory["status"] == "ok" and memory["values"] == {
        "batch": 64,
        "then_batch": 8,
        "faked": True,
        "allocator": "",
    }
    (training,) = [r for (section, _), r in rows.items() if section == "training run"]
    assert training["status"] == "ok" and training["values"]["val/fd_effl0"] > 0
    (ddp,) = [r for (section, _), r in rows.items() if section == "ddp"]
    assert ddp["values"]["backend"].startswith("gloo")
    (shared,) = [r for (section, _), r in rows.items() if section == "shared sampling"]
    assert shared["status"] == "ok" and shared["values"]["same_npz"] and shared["values"]["backend"] == "gloo"
    samplers = [name.split()[0] for (section, name) in rows if section == "sampling"]
    assert samplers == ["ddpm", "ddim", "dpm_solver", "euler", "heun"]
    assert all(rows[("sampling", n)]["values"]["img_per_s"] > 0 for (s, n) in rows if s == "sampling")


def test_a_failing_row_fails_the_check_and_is_named_in_the_table(tmp_path, monkeypatch, capsys) -> None:
    check = gpu_check_module()

    def broken() -> dict:
        raise RuntimeError("CUDA error: an illegal memory access")

    def rows(device, tiny, work):
        return [
            check.checked("ddp", "1 process", broken),
            check.checked("sampling", "x", lambda: {"img_per_s": 1.0}),
        ]

    monkeypatch.setattr(check, "run_check", rows)
    out = tmp_path / "check.json"
    assert check.main(["--device", "cpu", "--tiny", "--json", str(out)]) == 1
    table = json.loads(out.read_text())
    assert table["failed"] == 1
    assert table["rows"][0]["status"] == "failed: RuntimeError: CUDA error: an illegal memory access"
    assert "| ddp | 1 process | failed: RuntimeError" in capsys.readouterr().out


def test_cuda_requested_without_a_gpu_is_one_error_line(tmp_path, capsys, monkeypatch) -> None:
    check = gpu_check_module()
    monkeypatch.setattr(check.torch.cuda, "is_available", lambda: False)
    assert check.main(["--device", "cuda", "--json", str(tmp_path / "c.json")]) == 2
    assert capsys.readouterr().err.startswith("error: --device cuda but torch sees no CUDA GPU")
    assert not (tmp_path / "c.json").exists()


def test_the_full_size_rows_build_their_models_and_a_valid_training_run(tmp_path: Path) -> None:
    """What only the GPU run uses, built here: the CIFAR U-Net beside its diffusers peer (the same function), and
    the 200-step cifar10_ddpm run's overrides composed and checked as train.py checks them."""
    from conftest import compose_config

    from difflab.run.rules import check_values
    from difflab.run.train_checks import RULES

    check = gpu_check_module()
    ours, theirs, shape = check.built_pair("unet_ddpm_cifar10", check.torch.device("cpu"))
    assert shape == (3, 32, 32) and sum(p.numel() for p in ours.parameters()) > 35e6
    x, t = check.torch.randn(1, *shape), check.torch.tensor([500])
    with check.torch.no_grad():
        torch_close = check.torch.testing.assert_close
        torch_close(check.forward_of(ours)(x, t), check.forward_of(theirs)(x, t), rtol=1e-4, atol=1e-4)
    cfg = compose_config("train", check.training_run_args(False, tmp_path), tmp_path / "run")
    check_values(cfg, RULES)
    assert (cfg.trainer.max_steps, cfg.trainer.precision, cfg.compile) == (200, "bf16-mixed", "regional")
    assert cfg.callbacks.fid.every_n_steps == 200 and cfg.metrics.extractor == "efficientnet_lite0"
    assert cfg.model.image_size == 32 and cfg.paths.data_dir == str(tmp_path)
