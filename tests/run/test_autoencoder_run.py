"""An autoencoder trained by train.py (model=autoencoder_kl_*, callbacks=autoencoder): it learns to reconstruct,
writes input | reconstruction grids and checkpoints that resume; evaluate.py scores its reconstructions (PSNR,
SSIM, rFD); sample.py and difflab.load refuse it in one line; bad configurations are one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import TINY_AE, compose_config, one_error_line, run_cli
from PIL import Image
from wandb_files import history_rows

import difflab
from difflab.autoencoder_checkpoint import is_autoencoder, load_autoencoder
from difflab.checkpoint import read_checkpoint
from difflab.evaluation.reconstruction import psnr
from difflab.run.evaluate import evaluate
from difflab.run.train import train
from difflab.tracking.run_ids import ID_FILE


def held_out_l1(net: torch.nn.Module) -> float:
    """Mean |x - x̂| of the digits' held-out images reconstructed from the posterior mean."""
    from difflab.data import ImageDataModule

    images = torch.stack(
        [item[0] for item in ImageDataModule("digits", image_size=8, channels=1).dataset_for("val")]
    )
    with torch.no_grad():
        return float((net(images, sample_posterior=False)[0] - images).abs().mean())


def test_training_makes_reconstructions_better_than_the_initial_network(autoencoder_run: Path) -> None:
    trained = load_autoencoder(autoencoder_run).net
    torch.manual_seed(0)
    initial = type(trained)(
        in_channels=1,
        latent_channels=3,
        block_out_channels=[8, 16, 16],
        layers_per_block=1,
        norm_num_groups=8,
    ).eval()
    assert held_out_l1(trained) < 0.6 * held_out_l1(initial)


def test_the_checkpoint_records_an_autoencoder_run_and_the_grids_pair_inputs_with_reconstructions(
    autoencoder_run: Path,
) -> None:
    ckpt = read_checkpoint(autoencoder_run / "checkpoints" / "last.ckpt")
    assert ckpt["difflab_config"]["task"] == "autoencoder"
    assert ckpt["difflab_config"]["model"]["_target_"] == "difflab.models.AutoencoderKL"
    assert is_autoencoder(autoencoder_run) and is_autoencoder(autoencoder_run / "checkpoints" / "last.ckpt")
    grid = Image.open(autoencoder_run / "samples" / "final.png")
    step_grid = autoencoder_run / "samples" / "step_0000002.png"
    assert step_grid.is_file()
    # 8 held-out digits and their 8 reconstructions as pairs, four pairs a row: 2 rows of 8 tiles of 8 px + 2 px
    # padding, enlarged by a whole factor.
    scale = grid.width // (8 * 10 + 2)
    assert grid.size == (scale * 82, scale * 22)


def test_an_autoencoder_trains_in_bf16_mixed_with_its_fused_optimizer_and_clipping(tmp_path: Path) -> None:
    # Before: Lightning's "Adam does not allow for gradient clipping" RuntimeError at step 1 (the diffusion module
    # clipped bf16 gradients itself; the autoencoder module did not), with every recipe that clips, on GPU too.
    run = tmp_path / "run"
    overrides = [
        *TINY_AE,
        "trainer.precision=bf16-mixed",
        "trainer.max_steps=2",
        "trainer.gradient_clip_val=1.0",
    ]
    train(compose_config("train", [*overrides, "optim.fused=true"], run))
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 2


def test_psnr_is_20_db_for_an_error_of_a_tenth_of_the_range() -> None:
    reference = torch.zeros(2, 3, 4, 4)
    assert torch.allclose(psnr(reference + 0.2, reference), torch.full((2,), 20.0))


def test_evaluate_scores_the_reconstructions_of_the_held_out_split(
    autoencoder_run: Path, tmp_path: Path
) -> None:
    cfg = compose_config(
        "eval",
        [
            f"ckpt={autoencoder_run}",
            "n=40",
            f"out={tmp_path / 'r.json'}",
            f"metrics.cache_dir={tmp_path / 'cache'}",
            "metrics.kid_subset_size=10",
            "metrics.kid_subsets=10",
        ],
        tmp_path / "eval",
    )
    report = evaluate(cfg)
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["metrics"] == report["metrics"]
    assert set(report["metrics"]) == {"psnr", "ssim", "rfd_effl0"}
    assert report["reconstructed"]["n"] == 40 and report["reference"]["split"] == "val"
    assert 10 < report["metrics"]["psnr"] < 60 and 0 < report["metrics"]["ssim"] <= 1
    assert report["metrics"]["rfd_effl0"] >= 0


def test_evaluate_reconstructs_the_data_and_split_it_is_given(autoencoder_run: Path, tmp_path: Path) -> None:
    """Before, data= and metrics.reference_split= were ignored: the report named the run's own digits val split
    and its scores were that split's."""
    small = [
        f"ckpt={autoencoder_run}",
        "n=20",
        f"metrics.cache_dir={tmp_path / 'cache'}",
        "metrics.kid_subset_size=10",
        "metrics.kid_subsets=10",
    ]

    def scored(*given: str) -> dict:
        return evaluate(
            compose_config("eval", [*small, *given, f"out={tmp_path / 'r.json'}"], tmp_path / "eval")
        )

    own = scored()
    (tmp_path / "r.json").unlink()
    train = scored("metrics.reference_split=train")
    assert train["reference"]["split"] == "train" and train["metrics"] != own["metrics"]
    (tmp_path / "r.json").unlink()
    larger = scored("data=digits", "data.image_size=16")
    assert (larger["reference"]["split"], larger["reference"]["image_size"]) == ("val", 16)
    assert larger["metrics"] != own["metrics"]
    (tmp_path / "r.json").unlink()
    # Data the autoencoder cannot encode: one line naming the fix, nothing written.
    with pytest.raises(
        ValueError, match=r"^the autoencoder's down factor 4 does not divide data.image_size=6: "
    ):
        scored("data=digits", "data.image_size=6")
    with pytest.raises(
        ValueError, match=r"^the autoencoder encodes 1-channel images, but data= gives 3-channel "
    ):
        scored("data=digits", "data.channels=3")
    assert not (tmp_path / "r.json").exists()


def test_an_n_beyond_the_held_out_split_is_named(autoencoder_run: Path, tmp_path: Path, caplog) -> None:
    """Before, n=5000 gave a report of n=90 without a word."""
    overrides = [f"ckpt={autoencoder_run}", "n=5000", f"out={tmp_path / 'r.json'}"]
    overrides += [
        f"metrics.cache_dir={tmp_path / 'cache'}",
        "metrics.kid_subset_size=10",
        "metrics.kid_subsets=10",
    ]
    with caplog.at_level("WARNING", logger="difflab"):
        report = evaluate(compose_config("eval", overrides, tmp_path / "eval"))
    held_out = report["reconstructed"]["n"]
    assert held_out < 5000
    assert (
        f"n=5000, but the held-out split of digits holds {held_out} images: all {held_out} are" in caplog.text
    )


@pytest.mark.parametrize("given", ["run folder", "checkpoint"])
def test_autoencoder_scores_go_to_its_runs_wandb_run(
    autoencoder_run: Path, tmp_path: Path, given: str
) -> None:
    """README "Into the run's W&B run": an autoencoder run's scores are logged into its W&B run as eval/*, as a
    diffusion run's are, whether ckpt= names the run folder or its checkpoint."""
    run = tmp_path / "run"
    shutil.copytree(autoencoder_run, run)
    (run / ID_FILE).write_text("aerun1\n")
    ckpt = run if given == "run folder" else run / "checkpoints" / "last.ckpt"
    small = ["n=10", "metrics.kid_subset_size=5", "metrics.kid_subsets=5"]
    cfg = compose_config(
        "eval", [f"ckpt={ckpt}", *small, f"metrics.cache_dir={tmp_path / 'cache'}"], tmp_path
    )
    report = evaluate(cfg)
    assert (run / "metrics.json").is_file()
    (wandb_run,) = (run / "wandb").glob("offline-run-*-aerun1")
    (row,) = [row for row in history_rows(wandb_run) if "eval/psnr" in row]
    for name, value in report["metrics"].items():
        assert row[f"eval/{name}"] == pytest.approx(value)
    assert row["eval/n"] == 10 and row["trainer/global_step"] == 60


def test_difflab_load_refuses_an_autoencoder_in_one_line(autoencoder_run: Path) -> None:
    with pytest.raises(
        ValueError, match=r"is an autoencoder \(task=autoencoder\), not a diffusion model"
    ) as error:
        difflab.load(autoencoder_run)
    assert "\n" not in str(error.value)


def test_sample_py_refuses_an_autoencoder_in_one_line(autoencoder_run: Path, tmp_path: Path) -> None:
    result = run_cli("sample.py", f"ckpt={autoencoder_run}", "n=2", f"out={tmp_path / 'samples'}")
    assert "evaluate.py ckpt=" in one_error_line(result)
    assert not (tmp_path / "samples").exists()


def test_export_py_given_an_autoencoder_says_how_it_is_exported(
    autoencoder_run: Path, tmp_path: Path
) -> None:
    """Before, "it cannot sample or edit; evaluate.py … scores its reconstructions", beside the point of export."""
    from difflab.run.export import export

    cfg = compose_config("export", [f"ckpt={autoencoder_run}", f"out={tmp_path / 'out'}"], tmp_path)
    with pytest.raises(
        ValueError, match=r"is an autoencoder \(task=autoencoder\): export.py exports diffusion"
    ):
        export(cfg)
    assert not (tmp_path / "out").exists()


def test_a_resumed_autoencoder_run_continues_from_its_step(autoencoder_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    shutil.copytree(autoencoder_run, run)
    metrics = train(compose_config("train", [*TINY_AE, "trainer.max_steps=64", "ckpt_path=last"], run))
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 64
    assert "train/loss" in metrics


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["callbacks=default"], r"an autoencoder run .* cannot use the callbacks sample_grid, ema"),
        (["model.block_out_channels=[8,8,8,8,8]"], r"down factor 16 does not divide data.image_size=8"),
        # Before, torch's tracebacks at step 1: "Kernel size can't be greater than actual input size" and
        # "weight of size [0, 16, 3, 3]".
        (
            [
                "autoencoder_module.disc_weight=0.5",
                "autoencoder_module.disc_start=1",
                "autoencoder_module.disc_layers=2",
            ],
            r"^autoencoder_module.disc_layers=2 needs images of at least 12x12 \(its patch map would be empty at "
            r"data.image_size=8\): use fewer disc_layers or larger images$",
        ),
        (
            ["model.latent_channels=0"],
            r"^model.latent_channels=0: an autoencoder needs at least 1 latent channel$",
        ),
    ],
)
def test_bad_autoencoder_configurations_are_one_line_errors(tmp_path: Path, overrides, message) -> None:
    base = (
        [o for o in TINY_AE if not o.startswith("callbacks.reconstruction_grid")]
        if "callbacks=default" in overrides
        else TINY_AE
    )
    with pytest.raises(ValueError, match=message):
        train(compose_config("train", [*base, *overrides], tmp_path / "run"))
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("recipe", "latent_shape"),
    [
        ("mnist_autoencoder_cpu", (3, 7, 7)),
        ("cifar10_autoencoder", (3, 8, 8)),
        ("celeba64_autoencoder", (3, 16, 16)),
    ],
)
def test_autoencoder_recipes_are_f4_autoencoder_runs(recipe, latent_shape, tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cfg = compose_config("train", [f"experiment={recipe}"], tmp_path / "run")
    assert cfg.task == "autoencoder" and "reconstruction_grid" in cfg.callbacks and "ema" not in cfg.callbacks
    net = instantiate(cfg.model)
    size = cfg.data.image_size
    with torch.no_grad():
        latents = net.encode(torch.zeros(1, cfg.data.channels, size, size)).mean
    assert tuple(latents.shape[1:]) == latent_shape


def test_mnist_autoencoder_cpu_trains_on_real_mnist(tmp_path: Path) -> None:
    from conftest import shared_data_or_skip

    root = shared_data_or_skip()
    overrides = [
        "experiment=mnist_autoencoder_cpu",
        f"data.root={root}",
        "logger=csv",
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "trainer.limit_val_batches=1",
        "trainer.enable_progress_bar=false",
    ]
    metrics = train(compose_config("train", overrides, tmp_path / "run"))
    assert metrics["val/psnr"] > 0
    assert (tmp_path / "run" / "samples" / "final.png").is_file()


def discriminator_weights(path: Path) -> dict[str, torch.Tensor]:
    state = read_checkpoint(path)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("discriminator.") and v.is_floating_point()}


def test_the_patch_discriminator_joins_at_its_warm_up_step_and_only_then_learns(tmp_path: Path) -> None:
    gan = [
        "autoencoder_module.disc_weight=0.5",
        "autoencoder_module.disc_start=2",
        "autoencoder_module.disc_layers=1",
    ]
    train(compose_config("train", [*TINY_AE, *gan, "trainer.max_steps=4"], tmp_path / "run"))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    adversarial_steps = sorted({row["step"] for row in rows if "train/d_loss" in row})
    assert adversarial_steps and min(adversarial_steps) >= 2  # not before disc_start
    assert any("train/l1" in row and row["step"] < 2 for row in rows)
    # Step 2's checkpoint: the discriminator as it was before its first update; steps 2 and 3 train it.
    before = discriminator_weights(tmp_path / "run" / "checkpoints" / "step_0000002.ckpt")
    after = discriminator_weights(tmp_path / "run" / "checkpoints" / "step_0000004.ckpt")
    assert before and any(not torch.equal(before[k], after[k]) for k in before)
    assert read_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")["global_step"] == 4


GAN = [
    "autoencoder_module.disc_weight=0.5",
    "autoencoder_module.disc_start=2",
    "autoencoder_module.disc_layers=1",
]


def test_a_resume_that_switches_the_discriminator_on_is_one_line_before_anything_is_written(
    tmp_path: Path,
) -> None:
    # Before, Lightning's "Missing key(s) discriminator.main.0.weight" traceback, after .hydra/resumed_step_* was
    # written.
    run = tmp_path / "run"
    train(compose_config("train", [*TINY_AE, "trainer.max_steps=2"], run))
    result = run_cli(
        "train.py", *TINY_AE, *GAN, "trainer.max_steps=4", "ckpt_path=last", f"hydra.run.dir={run}"
    )
    assert one_error_line(result) == (
        f"error: checkpoint {run / 'checkpoints' / 'last.ckpt'} was trained without a discriminator "
        "(autoencoder_module.disc_weight=0): a resume cannot add one, the checkpoint holds no weights or optimizer "
        "state for it; start a new run with autoencoder_module.disc_weight=0.5"
    )
    assert not list((run / ".hydra").glob("resumed_step_*"))


def test_a_resume_keeps_the_discriminator_it_was_trained_with(tmp_path: Path) -> None:
    from difflab.runs.resume import check_discriminator_kept

    path = tmp_path / "last.ckpt"
    stored = {"task": "autoencoder", "autoencoder_module": {"disc_weight": 0.5, "disc_layers": 1}}
    check_discriminator_kept({"disc_weight": 0.1, "disc_layers": 1}, stored, path)  # a new weight is fine
    check_discriminator_kept({"disc_weight": 0.0}, {"task": "autoencoder", "autoencoder_module": {}}, path)
    with pytest.raises(ValueError, match=rf"^checkpoint {path} was trained with a discriminator \(autoencoder_module"
                       r".disc_weight=0.5\): resumed without it, .*; keep autoencoder_module.disc_weight above 0"):  # fmt: skip
        check_discriminator_kept({"disc_weight": 0.0, "disc_layers": 1}, stored, path)
    with pytest.raises(
        ValueError, match=r"^autoencoder_module.disc_layers=3 \(checkpoint: 1\): the discriminator "
    ):
        check_discriminator_kept({"disc_weight": 0.5, "disc_layers": 3}, stored, path)


def test_the_discriminator_is_off_by_default(autoencoder_run: Path) -> None:
    assert not discriminator_weights(autoencoder_run / "checkpoints" / "last.ckpt")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("gan", "trainer"),
    [
        ([], ["trainer=ddp", "trainer.accelerator=cpu"]),
        (["autoencoder_module.disc_weight=0.5", "autoencoder_module.disc_start=2", "autoencoder_module.disc_layers=1"],
         ["trainer=ddp", "trainer.accelerator=cpu"]),
        # strategy auto: Lightning's plain DDP on two processes (review: the first fix missed it)
        (["autoencoder_module.disc_weight=0.5", "autoencoder_module.disc_start=2", "autoencoder_module.disc_layers=1"],
         ["trainer=cpu"]),
    ],
    ids=["plain", "discriminator", "discriminator, strategy auto"],
)  # fmt: skip
def test_an_autoencoder_trains_under_two_process_ddp(
    tmp_path: Path, gan: list[str], trainer: list[str]
) -> None:
    """Two CPU ranks (gloo): checkpoints and grids on the shared schedule, no rank left waiting on a collective.
    With the discriminator on (before: DDP stopped at step 2, as it had no gradient at step 0)."""
    run = tmp_path / "run"
    overrides = [o for o in TINY_AE if o not in ("logger=csv", "trainer=cpu")]
    result = run_cli(
        "train.py",
        *overrides,
        *gan,
        *trainer,
        "trainer.devices=2",
        "trainer.max_steps=4",
        "logger=none",
        "cpu_threads=1",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 4
    assert (run / "samples" / "step_0000002.png").is_file() and (run / "samples" / "final.png").is_file()
    if gan:  # it learnt at steps 2 and 3
        before = discriminator_weights(run / "checkpoints" / "step_0000002.ckpt")
        after = discriminator_weights(run / "checkpoints" / "last.ckpt")
        assert before and any(not torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("given", ["formulation=flow", "data.condition=superres", "sampler.steps=3"])
def test_a_diffusion_setting_typed_for_an_autoencoder_run_is_one_line(tmp_path: Path, given: str) -> None:
    # Before, formulation= and sampler.* were taken and ignored without a word, and data.condition=superres said
    # "model.cond_channels is not an argument of AutoencoderKL".
    run = tmp_path / "run"
    result = run_cli("train.py", *TINY_AE, "logger=none", given, f"hydra.run.dir={run}")
    assert one_error_line(result) == (
        f"error: {given}: an autoencoder run trains no diffusion model, so nothing reads it here; drop it (it "
        "belongs to the latent diffusion run that uses this autoencoder, autoencoder=<this run>)"
    )
    assert not run.exists()


@pytest.mark.parametrize(
    "given", ["sampler=ddpm", "guidance=2", "seed=3", f"autoencoder={Path('elsewhere')}"]
)
def test_evaluate_refuses_generation_settings_an_autoencoder_does_not_read(
    autoencoder_run: Path, tmp_path: Path, given: str
) -> None:
    # Before, taken and ignored: the scores were the same to the digit, and autoencoder=<another> scored this one.
    result = run_cli(
        "evaluate.py", f"ckpt={autoencoder_run}", "n=8", given, f"out={tmp_path / 'report.json'}"
    )
    line = one_error_line(result)
    assert line.startswith(f"error: {given} given, but ") and "is an autoencoder" in line, line
    assert not (tmp_path / "report.json").exists()
