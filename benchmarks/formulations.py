"""Formulations side by side on the digits: the cost of one training step (vp, vp + min-SNR, edm, flow, measured
interleaved in this process) and, for a run of each trained with the same net, data and steps (experiment=
digits_cpu / digits_edm_cpu / digits_flow_cpu), the scores of 1,000 samples per sampler and NFE. Prints markdown
tables; name the CPU beside them (`lscpu | grep 'Model name'`).

    .venv/bin/python benchmarks/formulations.py                       # trains the three runs first if missing
    .venv/bin/python benchmarks/formulations.py --runs vp=<run> edm=<run> flow=<run> --nfe 5 10 20 50
    .venv/bin/python benchmarks/formulations.py --steps-only          # only the training-step table
    # the issue's comparison: the same training wall time for each (not the same steps), NFE 5-50, n = 1000
    .venv/bin/python benchmarks/formulations.py --wall-time-s 210 --nfe 5 10 20 50 --n 1000
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
# Beside it (machine.py), also when a test loads this file by its path.
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from machine import cpu_name  # noqa: E402

RECIPES = {"vp": "digits_cpu", "edm": "digits_edm_cpu", "flow": "digits_flow_cpu"}
STEP_VARIANTS = {
    "vp (ε, uniform)": [],
    "vp, min-SNR-5": ["formulation.weighting=min_snr"],
    "edm (λ(σ))": ["formulation=edm"],
    "edm, learned u(σ) (EDM2)": ["formulation=edm", "formulation.weighting=learned"],
    "flow (logit-normal t)": ["formulation=flow"],
}
SAMPLERS = {"ddim": lambda nfe: nfe, "dpm_solver": lambda nfe: nfe, "heun": lambda nfe: (nfe + 1) // 2}


def compose_config(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(name, overrides=overrides)


def step_times(repeats: int, batch: int) -> dict[str, float]:
    """Median ms of one forward+backward of each variant's loss on the digits net, interleaved round-robin so that
    a busy machine slows every variant alike."""
    modules, times = {}, {}
    for label, overrides in STEP_VARIANTS.items():
        cfg = compose_config("train", ["experiment=digits_cpu", *overrides])
        modules[label] = instantiate(cfg.module)
        times[label] = []
    x0 = torch.rand(batch, 1, 8, 8) * 2 - 1
    for _ in range(repeats):
        for label, module in modules.items():
            start = time.perf_counter()
            module.loss_fn(module.net, x0).backward()
            times[label].append(time.perf_counter() - start)
    return {label: 1000 * statistics.median(t[3:]) for label, t in times.items()}


def budget_overrides(wall_time_s: int | None) -> list[str]:
    """train.py overrides that end training after wall_time_s seconds of fitting instead of at the recipe's steps
    (Lightning's max_time; last.ckpt is written where it stops); none for None."""
    if wall_time_s is None:
        return []
    minutes, seconds = divmod(int(wall_time_s), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    return ["trainer.max_steps=-1", f"+trainer.max_time='{days:02d}:{hours:02d}:{minutes:02d}:{seconds:02d}'"]


def trained_runs(
    given: dict[str, str], out: Path, wall_time_s: int | None = None, wanted: Iterable[str] = tuple(RECIPES)
) -> dict[str, tuple[Path, float | None]]:
    """(run folder, training wall seconds or None when given) of each wanted formulation; missing ones trained
    here, for the recipe's steps or, with wall_time_s, for that long each."""
    runs = {}
    for name, recipe in RECIPES.items():
        if name not in wanted:
            continue
        if name in given:
            runs[name] = (Path(given[name]), None)
            continue
        run = out / recipe
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                str(ROOT / "train.py"),
                f"experiment={recipe}",
                f"hydra.run.dir={run}",
                "logger=csv",
                *budget_overrides(wall_time_s),
            ],
            check=True,
            cwd=ROOT,
        )
        runs[name] = (run, time.perf_counter() - start)
    return runs


def score(run: Path, sampler: str, steps: int, n: int, cache: Path) -> dict[str, float]:
    """evaluate.py's report of n samples of the run's checkpoint with `sampler` at `steps` (trailing grid)."""
    from difflab.run.evaluate import evaluate

    with tempfile.TemporaryDirectory() as folder:
        overrides = [
            f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
            f"n={n}",
            f"sampler={sampler}",
            f"sampler.steps={steps}",
            "sampler.timestep_spacing=trailing",
            "batch_size=500",
            "cpu_threads=1",
            "log_wandb=false",
            f"metrics.cache_dir={cache}",
            "metrics.reference_split=train",  # as the digits recipes score: 1,707 images
            f"out={Path(folder) / 'report.json'}",
        ]
        report = evaluate(compose_config("eval", overrides))
    return report["metrics"] | {"nfe": report["generated"]["nfe"]}


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (sys.argv when None)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="*", default=[], help="name=<run folder> for vp, edm, flow")
    parser.add_argument("--nfe", nargs="*", type=int, default=[5, 10, 20, 50])
    parser.add_argument("--samplers", nargs="*", default=["ddim", "dpm_solver"], choices=list(SAMPLERS))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument(
        "--formulations",
        nargs="*",
        default=list(RECIPES),
        choices=list(RECIPES),
        help="which to train and score",
    )
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench_formulations"))
    parser.add_argument("--steps-only", action="store_true")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument(
        "--wall-time-s", type=int, default=None, help="train each formulation this long instead of its steps"
    )
    return parser.parse_args(argv)


def main() -> None:
    args = parse_arguments()
    torch.set_num_threads(1)

    print(f"CPU: {cpu_name()}, one torch thread\n")
    print("| training step (digits net, batch 64) | ms, median |")
    print("| --- | --- |")
    for label, ms in step_times(args.repeats, 64).items():
        print(f"| {label} | {ms:.2f} |")
    if args.steps_only:
        return
    given = dict(item.split("=", 1) for item in args.runs)
    runs = trained_runs(given, Path(args.out), args.wall_time_s, args.formulations)
    cache = Path(args.out) / "metrics_cache"
    print(f"\n| formulation | sampler | NFE | fd_effl0 | KID | precision | recall |  (n={args.n})")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, (run, seconds) in runs.items():
        for sampler in args.samplers:
            for nfe in args.nfe:
                m = score(run, sampler, SAMPLERS[sampler](nfe), args.n, cache)
                print(
                    f"| {name} | {sampler} | {m['nfe']} | {m['fd_effl0']:.3f} | {m['kid']:.5f} | "
                    f"{m['precision']:.3f} | {m['recall']:.3f} |",
                    flush=True,
                )
        ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True, mmap=True)
        steps = f"{ckpt['global_step']} steps"
        print(f"|   ({name}: {steps}{'' if seconds is None else f', train.py ran {seconds:.0f} s here'}) |")


if __name__ == "__main__":
    main()
