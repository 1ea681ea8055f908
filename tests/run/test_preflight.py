"""Nothing written is lost, nothing broken is written: bad values, unwritable places, mismatched checkpoints and
runs started at the same moment each end in one line, before any file is written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import CLI_FAST, FAST_TRAIN, ROOT, compose_config, one_error_line, run_cli
from omegaconf import OmegaConf

from difflab.io.results import write_json
from difflab.run.argument_types import check_argument_types
from difflab.run.evaluate import evaluate
from difflab.run.preflight import claim
from difflab.run.rules import check_values
from difflab.run.sample import sample
from difflab.run.train import train
from difflab.run.train_checks import RULES, check_fid_inception_score


def listing(folder: Path) -> set[str]:
    return {str(p) for p in folder.rglob("*")} if folder.exists() else set()


def test_sample_with_out_leaves_no_hydra_folder_even_when_it_fails(tmp_path):
    before = listing(ROOT / "outputs" / "sample")
    line = one_error_line(run_cli("sample.py", f"ckpt={tmp_path / 'nope.ckpt'}", f"out={tmp_path / 'out'}"))
    assert line == f"error: checkpoint not found: {tmp_path / 'nope.ckpt'}"
    assert not (tmp_path / "out").exists()
    assert listing(ROOT / "outputs" / "sample") == before
    assert not any((ROOT / name).exists() for name in ("sample.log", ".hydra"))


def test_sample_without_ckpt_is_one_line():
    line = one_error_line(run_cli("sample.py", "n=2"))
    assert line.startswith("error: sample.py needs ckpt=<checkpoint>")


def test_a_value_of_the_wrong_type_is_named_before_the_run_folder_exists(tmp_path):
    run = tmp_path / "run"
    line = one_error_line(run_cli("train.py", *FAST_TRAIN, "trainer.max_steps=abc", f"hydra.run.dir={run}"))
    assert line == "error: trainer.max_steps='abc' is not a whole number"
    assert not run.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.dropout=abc"], "model.dropout='abc' is not a number"),
        (["model=dit_tiny", "model.depth=abc"], "model.depth='abc' is not a whole number"),
        # Before, "trainer.max_steps=10000.0 is not a whole number": true only of what the parser made of 1e4.
        (
            ["trainer.max_steps=1e4"],
            "trainer.max_steps=10000.0 is not a whole number: 1e3 and 2.0 are read as decimals; write 10000",
        ),
        (["model.channel_mults=abc"], "model.channel_mults='abc' is not a list"),
        (["schedule.timesteps=abc"], "schedule.timesteps='abc' is not a whole number"),
        (["formulation=edm", "formulation.sigma_data=abc"], "formulation.sigma_data='abc' is not a number"),
        (["optim.betas=abc"], "optim.betas='abc' is not two numbers in [0, 1)"),
        (["optim.betas=[0.9]"], "optim.betas=[0.9] is not two numbers in [0, 1)"),
        (["data.random_flip=maybe"], "data.random_flip='maybe' is not true or false"),
        # Before, taken as a string (truthy: the warm-up on, whatever was meant) and stored so in the config.
        (["callbacks.ema.warmup=maybe"], "callbacks.ema.warmup='maybe' is not true or false"),
        # The grids' sampler: Heun's churn settings were not checked (a TypeError traceback from Heun.__init__).
        (["sampler=heun", "sampler.s_churn=abc"], "sampler.s_churn='abc' is not a number"),
        (
            ["sampler=dpm_solver", "+sampler.eta=1"],
            "sampler.eta is not an argument of difflab.diffusion.DPMSolverSampler; if a recipe set it for another "
            "sampler, drop it with ~sampler.eta",
        ),
    ],
)
def test_a_group_value_of_the_wrong_type_is_named(tmp_path, overrides, message):
    """Before, these said what Python tripped over ("'<' not supported between instances of 'str' and 'int'"),
    or (optim.betas) gave a traceback and left the run folder."""
    run = tmp_path / "run"
    line = one_error_line(run_cli("train.py", *CLI_FAST, *overrides, f"hydra.run.dir={run}"))
    assert line == f"error: {message}"
    assert not run.exists()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # Before, a word was truthy: at_train_end=no scored at the end, metrics.prc=no computed precision/recall.
        (["callbacks.fid.at_train_end=no"], "callbacks.fid.at_train_end='no' is not true or false"),
        (["metrics.prc=no"], "metrics.prc='no' is not true or false"),
        (["data.download=no"], "data.download='no' is not true or false"),
        (["data.pin_memory=yes"], "data.pin_memory='yes' is not true or false"),
        (["data.persistent_workers=no"], "data.persistent_workers='no' is not true or false"),
        (["metrics.inception_score=flase"], "metrics.inception_score='flase' is not true or false"),
        # Before, val/kid=nan.
        (["metrics.kid_subsets=0"], "metrics.kid_subsets=0 must be at least 1"),
        (["metrics.kid_subset_size=0"], "metrics.kid_subset_size=0 must be at least 1"),
        (
            ["metrics.num_reference=0"],
            "metrics.num_reference=0 must be at least 1, or null for the whole split",
        ),
    ],
)
def test_a_mistyped_flag_or_bad_metric_setting_is_named_before_training(tmp_path, overrides, message):
    cfg = compose_config("train", [*FAST_TRAIN, "callbacks=[default,fid]", *overrides], tmp_path / "run")
    with pytest.raises(ValueError) as error:
        check_values(cfg, RULES)
    assert str(error.value) == message


def test_too_few_fid_samples_for_the_inception_score_are_refused_before_training(tmp_path):
    """Before, the run trained to its first FID evaluation and failed there ('needs at least 10 samples')."""
    overrides = [
        *FAST_TRAIN,
        "callbacks=[default,fid]",
        "callbacks.fid.num_samples=8",
        "metrics.inception_score=true",
    ]
    with pytest.raises(ValueError) as error:
        check_fid_inception_score(compose_config("train", overrides, tmp_path / "run"))
    assert str(error.value) == (
        "callbacks.fid.num_samples=8 is too few for the Inception Score (metrics.inception_score=true): it needs "
        "at least metrics.isc_splits=10 samples (one per split); raise callbacks.fid.num_samples or lower "
        "metrics.isc_splits"
    )


def test_a_recipes_key_that_the_swapped_in_model_does_not_take_is_named_with_its_remedy(tmp_path):
    """Before: "DiT.__init__() got an unexpected keyword argument 'attention_resolutions'", naming neither the key's
    group nor where it came from (mnist_sr_cpu sets model.attention_resolutions for its U-Net at 28 px)."""
    run = tmp_path / "run"
    overrides = ["experiment=mnist_sr_cpu", "model=dit_tiny", "data.root=/nonexistent"]
    line = one_error_line(run_cli("train.py", *overrides, "logger=none", f"hydra.run.dir={run}"))
    assert line == (
        "error: model.attention_resolutions is not an argument of difflab.models.DiT; if a recipe set it for "
        "another model, drop it with ~model.attention_resolutions"
    )
    assert not run.exists()
    remedied = compose_config("train", [*overrides, "~model.attention_resolutions"], run)
    check_argument_types(remedied)  # the line's remedy is accepted
    near = compose_config("train", ["model=dit_tiny", "+model.hidden_sise=32"], run)
    with pytest.raises(
        ValueError, match=r"^model.hidden_sise is not an argument .*; did you mean model.hidden_size\?"
    ):
        check_argument_types(near)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("batch_size=0", r"batch_size=0 must be at least 1 \(or auto\)"),
        ("batch_size=-1", r"batch_size=-1 must be at least 1 \(or auto\)"),
        ("n=0", "n=0 must be at least 1"),
        ("sampler.eta=nan", "sampler.eta=nan must be a finite number"),
        ("sampler.steps=0", "sampler.steps=0 must be at least 1"),
    ],
)
def test_bad_sampling_values_are_named_and_nothing_is_written(tiny_ckpt, tmp_path, override, message):
    cfg = compose_config("sample", [f"ckpt={tiny_ckpt}", override, f"out={tmp_path / 'out'}"], tmp_path)
    with pytest.raises(ValueError, match=f"^{message}$"):
        sample(cfg)
    assert not (tmp_path / "out").exists()


def test_non_finite_weights_give_an_error_not_black_images(tiny_ckpt, tmp_path):
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    ckpt["state_dict"] = {
        k: torch.full_like(v, math.nan) if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()
    }
    broken = tmp_path / "nan.ckpt"
    torch.save(ckpt, broken)
    cfg = compose_config(
        "sample", [f"ckpt={broken}", "n=2", "sampler.steps=2", f"out={tmp_path / 'out'}"], tmp_path
    )
    with pytest.raises(ValueError, match="2 of 2 samples are not finite"):
        sample(cfg)
    assert not (tmp_path / "out").exists()
    report = tmp_path / "report.json"
    cfg = compose_config("eval", [f"ckpt={broken}", "n=2", "sampler.steps=2", f"out={report}"], tmp_path)
    with pytest.raises(ValueError, match="samples are not finite"):
        evaluate(cfg)
    assert not report.exists()


def test_unwritable_output_places_are_refused_before_work(tiny_ckpt, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    line = one_error_line(run_cli("train.py", *FAST_TRAIN, f"hydra.run.dir={blocker / 'run'}"))
    assert line.startswith(f"error: cannot write the run folder {blocker / 'run'}")
    cfg = compose_config("sample", [f"ckpt={tiny_ckpt}", "n=2", f"out={blocker / 'out'}"], tmp_path)
    with pytest.raises(ValueError, match=f"cannot create the output folder {blocker / 'out'}"):
        sample(cfg)
    cfg = compose_config("eval", [f"ckpt={tiny_ckpt}", "n=2", f"out={blocker / 'r.json'}"], tmp_path)
    with pytest.raises(ValueError, match=f"cannot write {blocker / 'r.json'}"):
        evaluate(cfg)
    assert blocker.read_text() == "not a folder"


def test_a_run_folder_that_is_a_file_is_named_as_one(tmp_path):
    """Before, it said the folder 'was just taken by another run'."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    line = one_error_line(run_cli("train.py", *CLI_FAST, f"hydra.run.dir={blocker}"))
    assert line == f"error: cannot write the run folder {blocker}: it is a file, not a folder"
    assert blocker.read_text() == "not a folder"


def test_a_result_that_cannot_be_written_is_printed_not_lost(tmp_path, capsys):
    target = tmp_path / "gone" / "report.json"
    (tmp_path / "gone").write_text("a file where the folder should be")
    with pytest.raises(ValueError, match="the result is printed above"):
        write_json({"metrics": {"fd_effl0": 3.25}}, target)
    assert json.loads(capsys.readouterr().out) == {"metrics": {"fd_effl0": 3.25}}


def hydra_config(run_dir: Path, given: bool) -> OmegaConf:
    overrides = [f"hydra.run.dir={run_dir}"] if given else []
    return OmegaConf.create({"hydra": {"run": {"dir": str(run_dir)}, "overrides": {"hydra": overrides}}})


def test_two_runs_started_in_the_same_second_never_share_a_folder(tmp_path):
    dated = tmp_path / "outputs" / "train" / "2026-01-01" / "12-00-00"
    first, second = hydra_config(dated, given=False), hydra_config(dated, given=False)
    assert claim(first, dated) == dated
    assert claim(second, dated) == dated.with_name("12-00-00_2")
    assert second.hydra.run.dir == str(dated.with_name("12-00-00_2"))
    named = tmp_path / "mine"
    claim(hydra_config(named, given=True), named)
    with pytest.raises(SystemExit):
        claim(hydra_config(named, given=True), named)


def test_a_resume_whose_weights_do_not_fit_the_model_is_refused_before_anything_is_written(
    tiny_ckpt, tmp_path
):
    ckpt = torch.load(tiny_ckpt, map_location="cpu", weights_only=True)
    for key in ("state_dict", "current_model_state"):
        name = next(k for k in ckpt[key] if k.startswith("net.") and k.endswith("weight"))
        ckpt[key][name] = torch.zeros(3, 3)
    broken = tmp_path / "checkpoints" / "last.ckpt"
    broken.parent.mkdir()
    torch.save(ckpt, broken)
    run = tmp_path / "new_run"
    line = one_error_line(run_cli("train.py", *FAST_TRAIN, f"ckpt_path={broken}", f"hydra.run.dir={run}"))
    assert "does not fit the configured model (state_dict): 1 wrong shape" in line, line
    assert not run.exists()


@pytest.mark.slow
def test_a_run_started_in_a_second_another_run_took_moves_to_time_2(tmp_path):
    """The dated default folder of every second in the next two minutes already holds a run (started by a
    script a moment earlier): train.py starts in <time>_2 instead of being refused."""
    import datetime

    now = datetime.datetime.now()
    taken = set()
    for second in range(120):
        moment = now + datetime.timedelta(seconds=second)
        folder = tmp_path / "outputs" / "train" / moment.strftime("%Y-%m-%d") / moment.strftime("%H-%M-%S")
        (folder / ".hydra").mkdir(parents=True, exist_ok=True)
        taken.add(folder)
    cli = [o for o in FAST_TRAIN if o != "logger=csv"] + ["logger=none", "trainer.max_steps=1"]
    result = run_cli("train.py", *cli, env={"DIFFLAB_ROOT": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    runs = [p.parent for p in tmp_path.rglob("checkpoints")]
    assert len(runs) == 1 and runs[0].name.endswith("_2") and runs[0].with_name(runs[0].name[:-2]) in taken
    assert all(sorted(p.name for p in folder.iterdir()) == [".hydra"] for folder in taken)


def test_a_run_started_in_a_second_a_training_run_took_moves_to_time_2(tmp_path):
    """As above, with each of those runs still training (its folder locked): before, train.py was refused ("in
    use by a run training there now … pick a new hydra.run.dir") though no hydra.run.dir was given."""
    import datetime
    import fcntl

    now, held = datetime.datetime.now(), {}
    for second in range(120):
        moment = now + datetime.timedelta(seconds=second)
        folder = tmp_path / "outputs" / "train" / moment.strftime("%Y-%m-%d") / moment.strftime("%H-%M-%S")
        (folder / ".hydra").mkdir(parents=True)
        held[folder] = (folder / ".difflab-training").open("a+")
        fcntl.flock(held[folder].fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        result = run_cli("train.py", *CLI_FAST, "trainer.max_steps=1", env={"DIFFLAB_ROOT": str(tmp_path)})
    finally:
        for opened in held.values():
            opened.close()
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = [p.parent for p in tmp_path.rglob("checkpoints")]
    assert run.name.endswith("_2") and run.with_name(run.name[:-2]) in held
    assert all(sorted(p.name for p in folder.iterdir()) == [".difflab-training", ".hydra"] for folder in held)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        # Lightning's seed_everything takes 32 bits: before, it refused the seed once the run folder was made.
        (["seed=4294967296"], "seed=4294967296 must be at most 4294967295"),
        # Before, taken and ignored: the grids sampled the plain model (sample.py refuses the same).
        (
            ["callbacks.sample_grid.guidance=3"],
            "callbacks.sample_grid.guidance=3 has no effect on an unconditional model",
        ),
        (["sampler.eta=nan"], "sampler.eta=nan must be a finite number"),
        (["sampler.eta=-1"], "sampler.eta=-1 must be at least 0.0"),
        (["sampler.steps=0"], "sampler.steps=0 must be at least 1"),
        (
            ["sampler.steps=2000"],
            "sampler: sampler steps must be between 1 and the schedule's 1000 timesteps",
        ),
        (["sampler.timestep_spacing=wrong"], "sampler: unknown timestep_spacing 'wrong'"),
        (
            ["callbacks.sample_grid.guidance=nan"],
            "callbacks.sample_grid.guidance=nan must be a finite number",
        ),
        (["callbacks.sample_grid.precision=fp8"], "callbacks.sample_grid.precision='fp8' is not supported"),
        (
            ["callbacks.sample_grid.sampler={_target_:difflab.diffusion.DDIMSampler,_partial_:true,eta:-1}"],
            "callbacks.sample_grid.sampler: DDIM eta must be a finite number >= 0",
        ),
        (
            ["callbacks=[default,fid]", "callbacks.fid.every_n_steps=1000", "metrics.reference_split=test"],
            "metrics.reference_split='test'; choose one of train, val",
        ),
        # Before, the cosine's total_steps followed trainer.max_steps=-1: after its warm-up the learning rate was
        # 0 for the rest of the run, without a word.
        (
            ["lr_scheduler=warmup_cosine", "trainer.max_steps=-1", "trainer.max_epochs=2"],
            r"lr_scheduler.total_steps=-1 is no step count \(trainer.max_steps=-1\?\): a cosine decays to the step",
        ),
        (
            ["lr_scheduler=warmup", "lr_scheduler.warmup_steps=-5"],
            "lr_scheduler.warmup_steps=-5 must be at least 0",
        ),
        (
            ["lr_scheduler=warmup_cosine", "lr_scheduler.min_ratio=2"],
            "lr_scheduler.min_ratio=2 must be at most 1",
        ),
        (["cond_drop_prob=1.5"], "cond_drop_prob=1.5 must be at most 1"),
        # Before, a traceback (SeedSequence's TypeError) once the run folder was made, and Python's own words.
        (["data.split_seed=1.5"], "data.split_seed=1.5 is not a whole number"),
        (["data.split_seed=-1"], "data.split_seed=-1 must be at least 0"),
        (["data.val_fraction=abc"], "data.val_fraction='abc' is not a number"),
        (
            ["data.val_fraction=0"],
            "validation split of digits is empty: data.val_fraction=0 holds out no image, and a run validates",
        ),
        (["data.val_fraction=1"], "data.val_fraction=1 must be below 1"),
        # Before, a word was named as model.in_channels (which copies it) and 2 as "channels" alone.
        (["data.channels=abc"], r"data.channels='abc' must be 1 \(L\), 3 \(RGB\) or 4 \(RGBA\)"),
        (["data.channels=2"], r"data.channels=2 must be 1 \(L\), 3 \(RGB\) or 4 \(RGBA\)"),
    ],
)
def test_settings_used_late_in_a_run_are_checked_before_step_one(tmp_path, overrides, message):
    """A value the first sample grid or FID evaluation would trip over (step 500, or 10k on a GPU recipe)."""
    cfg = compose_config("train", [*FAST_TRAIN, *overrides], tmp_path / "run")
    with pytest.raises(ValueError, match=f"^{message}"):
        train(cfg)
    assert not (tmp_path / "run").exists()


def test_a_sampler_that_cannot_run_leaves_no_run_folder(tmp_path):
    run = tmp_path / "run"
    line = one_error_line(run_cli("train.py", *FAST_TRAIN, "sampler.eta=nan", f"hydra.run.dir={run}"))
    assert line == "error: sampler.eta=nan must be a finite number"
    assert not run.exists()


def test_a_resume_reads_its_checkpoint_once_to_check_it(tiny_ckpt, tmp_path, monkeypatch):
    """Preflight (the Hydra callback) and train share one preparation: the checkpoint is read once to be checked
    before anything is written, and once more by Lightning to restore it; never a second time to check it."""
    import shutil

    from hydra.core.global_hydra import GlobalHydra

    from difflab.compat import run_hydra
    from difflab.run.train import train_command

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_ckpt, run / "checkpoints" / "last.ckpt")
    reads, load = [], torch.load

    def counted(source, *args, **kwargs):
        if Path(str(getattr(source, "name", source))).name == "last.ckpt":
            reads.append(source)
        return load(source, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    overrides = [*FAST_TRAIN, "trainer.max_steps=3", "ckpt_path=last", f"hydra.run.dir={run}"]
    try:
        run_hydra(train_command, str(ROOT / "conf"), "train", overrides)
    finally:
        GlobalHydra.instance().clear()
    assert len(reads) == 2, reads  # difflab's check, then Lightning's restore


@pytest.mark.parametrize(
    ("key", "unit", "other"), [("max_steps", "steps", "max_epochs"), ("max_epochs", "epochs", "max_steps")]
)
def test_a_run_length_of_zero_is_refused_before_the_run_folder_exists(key, unit, other, tmp_path):
    """Before, trainer.max_steps=0 'trained' nothing and left a run folder holding only train.log."""
    run = tmp_path / "run"
    line = one_error_line(run_cli("train.py", *CLI_FAST, f"trainer.{key}=0", f"hydra.run.dir={run}"))
    assert line == (
        f"error: trainer.{key}=0 trains nothing: give a positive number of {unit} "
        f"(-1: until trainer.{other} ends the run)"
    )
    assert not run.exists()
