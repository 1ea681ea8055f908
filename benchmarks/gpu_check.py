"""The GPU check (`make gpu-check`): on one CUDA GPU, one table of what a new GPU machine must show, written as JSON.

Rows (estimated time on one H200, from the CPU timings and the models' sizes; the first GPU run measures them):
  train step     CIFAR U-Net and DiT-S/2 in fp32, TF32 and bf16-mixed, eager, and compiled in bf16-mixed (difflab
                 compile=regional, diffusers torch.compile), each beside diffusers' UNet2DModel /
                 DiTTransformer2DModel in the same process: img/s, peak memory, compile s.          ~3 min
  batch_size=auto  the generation batch that fits on the device (difflab.diffusion.auto_batch).     ~5 s
  out of memory  a generation batch far beyond the device is one line naming it, then a batch of 8
                 runs (on the CPU the device's limit is faked).                                      ~10 s
  training run   200 steps of experiment=cifar10_ddpm, bf16-mixed, compile=regional, FID callback at the
                 end (EfficientNet-Lite0 features, offline): the scores must be finite.            ~2 min
  ddp            a 1-GPU NCCL DDP run of 20 steps.                                                   ~40 s
  shared sampling  sample.py under torchrun on 2 GPUs (NCCL) writes the samples.npz of 1 process
                 (skipped on a machine with one GPU).                                                ~30 s
  sampling       images/s of each sampler on the CIFAR U-Net (bf16).                                 ~30 s
Every row is a function of the device; `--device cpu --tiny` runs each with tiny sizes (what
tests/run/test_gpu_check.py does), and rows that only mean something on CUDA (TF32, NCCL, peak memory) say
"skipped: <reason>" there. The exit status is 1 when any row failed; the table is printed and written as JSON.

    .venv/bin/python benchmarks/gpu_check.py --json outputs/gpu_check.json      # or: make gpu-check
    .venv/bin/python benchmarks/gpu_check.py --device cpu --tiny --json /tmp/gpu_check.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
# ../shared/data beside the checkout (this project's machines), or shared/data inside it (a copied tree).
SHARED_CIFAR = (
    next(
        (
            p
            for p in (ROOT.parent / "shared", ROOT / "shared")
            if (p / "data" / "cifar10-jpg.tar.gz").is_file()
        ),
        ROOT.parent / "shared",
    )
    / "data"
    / "cifar10-jpg.tar.gz"
)
MODELS = {
    "unet": ("unet_ddpm_cifar10", "unet_tiny"),
    "dit": ("dit_s2", "dit_tiny"),
}  # (full, tiny) conf/model names
SAMPLERS = ("ddpm", "ddim", "dpm_solver", "euler", "heun")


class Skip(Exception):
    """A row that does not apply on this device or checkout; its message is the reason shown in the table."""


@dataclass
class Row:
    """One line of the table: what was checked, ok / skipped: why / failed: what, and the measured values."""

    section: str
    name: str
    status: str = "ok"
    values: dict[str, Any] = field(default_factory=dict)


def checked(section: str, name: str, measure: Callable[[], dict[str, Any]]) -> Row:
    """Run one row's measurement; a Skip or an exception becomes the row's status instead of ending the check."""
    try:
        return Row(section, name, "ok", measure())
    except Skip as reason:
        return Row(section, name, f"skipped: {reason}")
    except Exception as error:  # noqa: BLE001 - every failure is a row of the table, the check goes on
        message = (str(error).strip().splitlines() or [""])[-1][:300]
        return Row(section, name, f"failed: {type(error).__name__}: {message}")


# --- the networks, difflab's and diffusers' ----------------------------------------------------------------------


def model_config(name: str) -> dict[str, Any]:
    """conf/model/<name>.yaml composed as train.py composes it (Skip when this checkout has no such file)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    if not (ROOT / "conf" / "model" / f"{name}.yaml").is_file():
        raise Skip(f"no conf/model/{name}.yaml")
    # CIFAR-10's image size and channels (the default data, 8x8 digits, is too small for the CIFAR U-Net).
    overrides = [f"model={name}", "data.image_size=32", "data.channels=3"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return OmegaConf.to_container(cfg.model, resolve=True)


def built_pair(
    name: str, device: torch.device
) -> tuple[torch.nn.Module, torch.nn.Module, tuple[int, int, int]]:
    """(difflab's net, diffusers' peer of the same size, the image shape) for conf/model/<name>.yaml."""
    from diffusers import UNet2DModel
    from hydra.utils import instantiate

    config = model_config(name)
    ours = instantiate(config)
    if "UNet" in str(config.get("_target_", "")):
        from difflab.model_folder.diffusers_mapping import diffusers_config, to_diffusers, unet_arguments

        theirs = UNet2DModel(**diffusers_config(unet_arguments(config)))
        theirs.load_state_dict(to_diffusers(ours.state_dict()))  # the same function, mapped weights
        shape = (ours.in_channels, ours.image_size, ours.image_size)
    else:  # a DiT: diffusers' DiTTransformer2DModel computing the same function (mapped weights)
        from difflab.model_folder.dit_mapping import diffusers_dit, dit_arguments

        theirs = diffusers_dit(ours.state_dict(), dit_arguments(config))
        shape = (ours.in_channels, ours.image_size, ours.image_size)
    return ours.to(device), theirs.to(device), shape


def forward_of(net: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """net(x, t) -> the prediction tensor, for difflab's nets and diffusers' (which return an output object)."""
    from diffusers import DiTTransformer2DModel, UNet2DModel

    if isinstance(net, UNet2DModel):
        return lambda x, t: net(x, t).sample
    if isinstance(net, DiTTransformer2DModel):
        return lambda x, t: net(x, t, class_labels=torch.zeros_like(t)).sample
    return lambda x, t: net(x, t)


# --- train steps -------------------------------------------------------------------------------------------------


def set_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """Set the matmul/conv float32 mode for `precision` and return the autocast dtype (None: no autocast)."""
    tf32 = precision == "tf32"
    if tf32 and device.type != "cuda":
        raise Skip("TF32 is a CUDA (Ampere and newer) mode")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    return torch.bfloat16 if precision == "bf16-mixed" else None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_rate(
    net: torch.nn.Module,
    shape: tuple[int, ...],
    batch: int,
    dtype: torch.dtype | None,
    steps: int,
    device: torch.device,
) -> dict[str, Any]:
    """img/s of forward + backward + Adam on `net`, the first step's extra time (compilation) and peak memory."""
    forward = forward_of(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.randn(batch, *shape, device=device)
    t = torch.randint(0, 1000, (batch,), device=device)

    def step() -> float:
        synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = (forward(x, t).float() - x).square().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        if not math.isfinite(float(loss)):
            raise FloatingPointError("non-finite loss")
        return time.perf_counter() - start

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first = step()
    step()  # warm-up: allocator, autotuning
    times = sorted(step() for _ in range(steps))
    median = times[len(times) // 2]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"img_per_s": batch / median, "first_step_extra_s": first - median, "peak_gib": peak}


def train_step_rows(device: torch.device, tiny: bool) -> list[Row]:
    """Each model × precision × eager/compiled, difflab and diffusers side by side (a row holds both and the ratio)."""
    from difflab.training.compile import compile_denoiser

    batch, steps = (2, 2) if tiny else (128, 10)
    # Inductor's C++ build of every kernel takes minutes on a CPU: the tiny run compiles with aot_eager (Dynamo
    # and AOT autograd, the same wiring) and says so.
    options = {"backend": "aot_eager"} if device.type != "cuda" else {}
    rows = []
    for names in MODELS.values():
        name = names[1] if tiny else names[0]
        cases = [("fp32", False), ("tf32", False), ("bf16-mixed", False), ("bf16-mixed", True)]
        for precision, compiled in cases:

            def measure(name=name, precision=precision, compiled=compiled) -> dict[str, Any]:
                dtype = set_precision(precision, device)
                ours, theirs, shape = built_pair(name, device)
                if compiled:
                    compile_denoiser(ours, "regional", **options)
                    theirs.compile(**options)
                a = train_rate(ours, shape, batch, dtype, steps, device)
                b = train_rate(theirs, shape, batch, dtype, steps, device)
                values = {f"difflab_{k}": v for k, v in a.items()} | {
                    f"diffusers_{k}": v for k, v in b.items()
                }
                values["ratio"] = a["img_per_s"] / b["img_per_s"]
                values["backend"] = options.get("backend", "inductor") if compiled else "eager"
                if device.type != "cuda":
                    values = {k: v for k, v in values.items() if not k.endswith("peak_gib")}
                    values["peak_gib"] = "n/a: CUDA memory counters only"
                return values

            mode = "compiled (regional)" if compiled else "eager"
            rows.append(checked("train step", f"{name} {precision} {mode} b{batch}", measure))
    set_precision("fp32", device)
    return rows


# --- batch_size=auto, sampling -----------------------------------------------------------------------------------


def auto_batch_row(device: torch.device, tiny: bool) -> Row:
    """The generation batch batch_size=auto picks on this device for the CIFAR U-Net."""

    def measure() -> dict[str, Any]:
        from difflab.diffusion.auto_batch import auto_batch_size

        net, _, shape = built_pair(MODELS["unet"][1 if tiny else 0], device)
        net.eval()
        t = torch.zeros(1, dtype=torch.long, device=device)

        def call(b: int) -> torch.Tensor:
            return net(torch.randn(b, *shape, device=device), t.expand(b))

        batch = auto_batch_size(call, 100_000, math.prod(shape), device)
        if batch < 1:
            raise ValueError(f"batch_size=auto gave {batch}")
        return {"batch": batch, "rule": "measured free memory" if device.type == "cuda" else "CPU default"}

    return checked("batch_size=auto", "unet generation batch", measure)


class FakedMemory(torch.nn.Module):
    """For the CPU: `net` on a device that holds `limit` samples; beyond it, what CUDA's allocator raises."""

    def __init__(self, net: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.net, self.limit = net, limit

    def forward(self, x: torch.Tensor, t: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory (faked: more than {self.limit} samples)")
        return self.net(x, t, *args, **kwargs)


def out_of_memory_row(device: torch.device, tiny: bool) -> Row:
    """A generation batch far beyond the device's memory is one line naming it (generation.memory's
    OutOfDeviceMemory: what sample.py, evaluate.py and pipe.sample print), and the device generates again right
    after it (what sample.py's resume=true batch_size=<fewer> relies on). On the CPU the device's limit is faked."""

    def measure() -> dict[str, Any]:
        from difflab.diffusion import DDIMSampler, NoiseSchedule
        from difflab.generation.images import Generation
        from difflab.generation.memory import OutOfDeviceMemory
        from difflab.generation.methods import Sampling
        from difflab.generation.request import GenerationRequest

        net, _, shape = built_pair(MODELS["unet"][1 if tiny else 0], device)
        net.eval()
        if device.type == "cuda":  # its noise fits in an eighth of the free memory, its activations cannot
            batch = int(torch.cuda.mem_get_info(device)[0] // (8 * 4 * math.prod(shape)))
        else:
            batch, net = 64, FakedMemory(net, limit=8)
        method = Sampling(DDIMSampler(NoiseSchedule.from_name("linear", timesteps=1000), steps=2), shape)
        try:
            next(Generation(GenerationRequest(method, range(batch), batch_size=batch), net).batches())
        except OutOfDeviceMemory as error:
            line = str(error)
        else:
            raise AssertionError(f"a batch of {batch} did not run out of memory")
        # On CUDA the allocator's figures come between: "… batches of N (2.00 GiB more asked for, …): give …"
        named = line.startswith(f"out of memory on {device} making batches of {batch}")
        if not named or ": give a smaller batch_size=" not in line or "\n" in line:
            raise AssertionError(f"not the one line expected: {line}")
        if device.type == "cuda":
            torch.cuda.empty_cache()
        again = Generation(GenerationRequest(method, range(8), batch_size=8), net).images()
        if again.shape != (8, *shape) or not bool(torch.isfinite(again).all()):
            raise FloatingPointError("no finite batch of 8 after running out of memory")
        figures = line[line.index("(") + 1 : line.index(")")] if "asked for" in line else ""
        return {"batch": batch, "then_batch": 8, "faked": device.type != "cuda", "allocator": figures}

    return checked("out of memory", "unet generation batch", measure)


def sampling_rows(device: torch.device, tiny: bool) -> list[Row]:
    """Images/s of each sampler through difflab's generation path (what sample.py runs), bf16 on CUDA."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from difflab.diffusion import NoiseSchedule
    from difflab.diffusion.generate import generate
    from difflab.generation.sampler import bound_sampler

    n, steps = (2, 2) if tiny else (256, 20)
    precision = "bf16" if device.type == "cuda" else "fp32"
    rows = []
    for sampler_name in SAMPLERS:

        def measure(sampler_name=sampler_name) -> dict[str, Any]:
            net, _, shape = built_pair(MODELS["unet"][1 if tiny else 0], device)
            net.eval()
            with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
                cfg = compose(
                    config_name="train", overrides=[f"sampler={sampler_name}", f"sampler.steps={steps}"]
                )
            schedule = NoiseSchedule.from_name("linear", timesteps=1000)
            sampler = bound_sampler(instantiate(cfg.sampler), schedule, "epsilon", latent=False)
            generate(sampler, net, range(min(n, 2)), shape, 0, n, precision=precision)  # warm-up
            synchronize(device)
            start = time.perf_counter()
            images = generate(sampler, net, range(n), shape, 0, n, precision=precision)
            synchronize(device)
            if not bool(torch.isfinite(images).all()):
                raise FloatingPointError("non-finite samples")
            return {"img_per_s": n / (time.perf_counter() - start), "steps": steps, "precision": precision}

        rows.append(checked("sampling", f"{sampler_name} {steps} steps n={n}", measure))
    return rows


# --- training runs through train.py ------------------------------------------------------------------------------


def run_train(args: list[str], run_dir: Path, timeout: int) -> list[dict[str, Any]]:
    """Run train.py with `args` into run_dir; the rows of its metrics file (raises with the error's last line)."""
    from difflab.runlogs import METRICS_FILE, read_rows

    env = {
        **os.environ,
        "WANDB_MODE": "offline",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args, "logger=csv", f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        raise RuntimeError(f"train.py exited {result.returncode}: {lines[-1] if lines else ''}")
    return read_rows(run_dir / METRICS_FILE)


def cifar_root(work: Path) -> Path:
    """A data folder holding cifar10/ (train/<class>/*.jpg): $DIFFLAB_DATA's, or ../shared/data's archive extracted."""
    given = os.environ.get("DIFFLAB_DATA")
    if given and (Path(given) / "cifar10").is_dir():
        return Path(given)
    if not SHARED_CIFAR.is_file():
        raise FileNotFoundError(
            f"no CIFAR-10: set DIFFLAB_DATA to a folder with cifar10/ or provide {SHARED_CIFAR}"
        )
    root = work / "data"
    with tarfile.open(SHARED_CIFAR) as archive:
        archive.extractall(root / "cifar10", filter="data")
    return root


def training_run_args(tiny: bool, data_root: Path | None) -> list[str]:
    """train.py's overrides for the training-run row: 200 steps of cifar10_ddpm in bf16 with compile=regional and
    the FID callback at the end (EfficientNet-Lite0 features, offline); tiny: 4 CPU steps of the digits net."""
    if tiny:
        return [
            "model=unet_tiny",
            "trainer.accelerator=cpu",
            "trainer.max_steps=4",
            "data.batch_size=8",
            "callbacks=[default,fid]",
            "callbacks.fid.every_n_steps=4",
            "callbacks.fid.num_samples=4",
            "callbacks.fid.batch_size=2",
            "metrics.num_reference=16",
            "metrics.kid_subset_size=4",
            "sampler.steps=2",
            "trainer.precision=bf16-mixed",
            "cpu_threads=1",
        ]  # fmt: skip  (compile stays off: inductor's C++ build would take minutes on a CPU)
    return [
        "experiment=cifar10_ddpm", f"paths.data_dir={data_root}", "trainer.max_steps=200",
        "trainer.precision=bf16-mixed", "compile=regional", "callbacks.fid.every_n_steps=200",
        "callbacks.fid.num_samples=2000", "metrics=effl0", "metrics.num_reference=5000",
        "sampler.steps=20", "trainer.val_check_interval=200",
    ]  # fmt: skip


def training_run_row(device: torch.device, tiny: bool, work: Path) -> Row:
    """A short run with the FID callback at its end: it must finish and its scores must be finite."""

    def measure() -> dict[str, Any]:
        args = training_run_args(tiny, None if tiny else cifar_root(work))
        start = time.perf_counter()
        rows = run_train([*args, f"metrics.cache_dir={work / 'cache'}"], work / "training_run", timeout=600)
        scores = {k: v for row in rows for k, v in row.items() if k.startswith("val/") and k != "val/loss"}
        if not scores:
            raise ValueError("the FID callback logged no score")
        bad = [k for k, v in scores.items() if not math.isfinite(float(v))]
        if bad:
            raise FloatingPointError(f"non-finite scores: {', '.join(bad)}")
        return {**scores, "wall_s": time.perf_counter() - start}

    return checked(
        "training run",
        "cifar10_ddpm 200 steps bf16 regional compile + FID" if not tiny else "tiny + FID",
        measure,
    )


def ddp_row(device: torch.device, tiny: bool, work: Path) -> Row:
    """One-process DDP: NCCL on a GPU (gloo on the CPU, where NCCL does not exist)."""

    def measure() -> dict[str, Any]:
        accelerator = "gpu" if device.type == "cuda" else "cpu"
        steps = 4 if tiny else 20
        rows = run_train(
            [
                "trainer=ddp",
                "trainer.devices=1",
                f"trainer.accelerator={accelerator}",
                f"trainer.max_steps={steps}",
                "model=unet_tiny" if tiny else "model=unet_small",
                "callbacks.sample_grid.every_n_steps=0",
                "trainer.val_check_interval=1000",
                "cpu_threads=1",
            ],
            work / "ddp_run",
            timeout=300,
        )
        losses = [float(r["train/loss"]) for r in rows if "train/loss" in r]
        if not losses or not all(math.isfinite(x) for x in losses):
            raise FloatingPointError("no finite training loss")
        return {
            "backend": "nccl" if device.type == "cuda" else "gloo (NCCL needs CUDA)",
            "last_loss": losses[-1],
        }

    return checked("ddp", "1 process, 1 device", measure)


def shared_sampling_row(device: torch.device, tiny: bool, work: Path) -> Row:
    """sample.py under torchrun on 2 processes (2 GPUs over NCCL; 2 CPU processes over gloo) writes the very
    samples.npz one process writes, from the ddp row's checkpoint."""

    def measure() -> dict[str, Any]:
        if device.type == "cuda" and torch.cuda.device_count() < 2:
            raise Skip("one GPU: NCCL takes one GPU per process, so sharing sample.py needs two")
        ckpt = work / "ddp_run" / "checkpoints" / "last.ckpt"
        if not ckpt.is_file():
            raise Skip("the ddp row wrote no checkpoint")
        args = [f"ckpt={ckpt}", "n=24" if tiny else "n=512", "batch_size=4" if tiny else "batch_size=64"]
        args += ["sampler.steps=4", f"device={device.type}", "cpu_threads=1"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        seconds = {}
        for processes in (1, 2):
            launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
            command = [sys.executable, *(launcher if processes > 1 else []), str(ROOT / "sample.py")]
            start = time.perf_counter()
            result = subprocess.run(
                [*command, *args, f"out={work / f'shared_{processes}'}"],
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            seconds[processes] = time.perf_counter() - start
            if result.returncode != 0:
                lines = [line for line in result.stderr.splitlines() if line.strip()]
                raise RuntimeError(
                    f"sample.py on {processes} exited {result.returncode}: {lines[-1] if lines else ''}"
                )
        one, two = ((work / f"shared_{k}" / "samples.npz").read_bytes() for k in (1, 2))
        if one != two:
            raise AssertionError("2 processes wrote another samples.npz than 1 process")
        backend = "nccl" if device.type == "cuda" else "gloo"
        return {
            "backend": backend,
            "same_npz": True,
            "one_process_s": seconds[1],
            "two_processes_s": seconds[2],
        }

    return checked("shared sampling", "sample.py on 2 processes", measure)


# --- the table ---------------------------------------------------------------------------------------------------


def cell(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def print_table(rows: list[Row], device: torch.device) -> None:
    print(
        f"\ngpu check on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'})\n"
    )
    print("| section | row | status | values |")
    print("| --- | --- | --- | --- |")
    for row in rows:
        values = ", ".join(f"{k}={cell(v)}" for k, v in row.values.items())
        print(f"| {row.section} | {row.name} | {row.status} | {values} |")


def run_check(device: torch.device, tiny: bool, work: Path) -> list[Row]:
    """Every row of the check, in the order of the table."""
    rows = train_step_rows(device, tiny)
    rows.append(auto_batch_row(device, tiny))
    rows.append(out_of_memory_row(device, tiny))
    rows.append(training_run_row(device, tiny, work))
    rows.append(ddp_row(device, tiny, work))
    rows.append(shared_sampling_row(device, tiny, work))
    rows.extend(sampling_rows(device, tiny))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny sizes and steps: every row in about a minute"
    )
    parser.add_argument("--json", type=Path, default=ROOT / "outputs" / "gpu_check.json")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "error: --device cuda but torch sees no CUDA GPU (use --device cpu --tiny to check the paths)",
            file=sys.stderr,
        )
        return 2
    torch.set_float32_matmul_precision("highest")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as work:
        rows = run_check(device, args.tiny, Path(work))
    print_table(rows, device)
    failed = [row for row in rows if row.status.startswith("failed")]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "device": str(device),
        "tiny": args.tiny,
        "wall_s": time.perf_counter() - start,
        "failed": len(failed),
    }
    args.json.write_text(json.dumps({**summary, "rows": [asdict(row) for row in rows]}, indent=1))
    print(f"\n{len(rows)} rows, {len(failed)} failed, {summary['wall_s']:.0f} s; table: {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
