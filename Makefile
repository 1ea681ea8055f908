# Two commands on a fresh machine: `make train` and `make test`.
# Any Python 3.11+ on the PATH (the lock's numpy and torch need 3.11 or newer); `make PYTHON=/path/to/python`.
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do command -v $$p >/dev/null && { echo $$p; break; }; done)
VENV := .venv
# Another torch build than the lock's CUDA one, from PyTorch's index: a CPU-only build for a laptop
# (make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu, no 3 GB of CUDA libraries) or one for an older
# NVIDIA driver (…/whl/cu126). Same torch and torchvision versions; everything else from the lock.
TORCH_INDEX ?=
TORCH_PINS := $(shell grep -E '^(torch|torchvision)==' requirements.lock)
BIN := $(VENV)/bin
# Test-only k-diffusion goes in without its dependencies (its training stack would pull scikit-image, kornia,
# clean-fid and an older numpy); the tests import only k_diffusion.sampling, whose own imports are in the lock.
# So does test-only torchcfm (its requirements pull torchdyn and its ODE stack); the tests import only
# torchcfm.conditional_flow_matching, which needs torch and POT (in the lock).
NO_DEPS := $(shell grep -E '^(k-diffusion|torchcfm)==' requirements.lock)
STAMP := $(VENV)/.installed

.PHONY: setup train test lint format bench gpu-check clean-venv

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || \
		{ echo "error: need Python 3.11 or newer on the PATH (found: $(or $(PYTHON),none)); run make PYTHON=<python3.11+>"; exit 2; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
ifdef TORCH_INDEX
	grep -vE '^((torch|torchvision|triton|k-diffusion|torchcfm)==|nvidia-|cuda-)' requirements.lock > $(VENV)/requirements-without-torch.txt
	$(BIN)/python -m pip install -q $(TORCH_PINS) --index-url $(TORCH_INDEX)
	$(BIN)/python -m pip install -q -r $(VENV)/requirements-without-torch.txt
else
	grep -vE '^(k-diffusion|torchcfm)==' requirements.lock > $(VENV)/requirements-with-deps.txt
	$(BIN)/python -m pip install -q -r $(VENV)/requirements-with-deps.txt
endif
	$(BIN)/python -m pip install -q --no-deps $(NO_DEPS)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

setup: $(STAMP)

train: setup
	$(BIN)/python train.py experiment=digits_flow_cpu $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two workers (pytest-xdist), each test file on one of them so its module fixtures are trained once: the tests
# run one torch thread each, so two cores run two files at once (7 min instead of 12 on this project's 2-core VM).
TEST_WORKERS ?= 2
test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The speed suite (markdown tables, each side by side in one process; see benchmarks/ and README "Performance"):
# U-Net and DiT steps and end-to-end sampling against diffusers, the share of the GEMM peak, the training loop's
# overhead over the bare step, 2-process DDP efficiency, post-hoc EMA's costs and the formulations' step cost (the
# formulations' scores: benchmarks/formulations.py without --steps-only, which trains three runs). About 25 min.
bench: setup
	$(BIN)/python benchmarks/unet_vs_diffusers.py $(ARGS)
	$(BIN)/python benchmarks/dit_vs_diffusers.py $(ARGS)
	$(BIN)/python benchmarks/samplers_vs_diffusers.py $(ARGS)
	$(BIN)/python benchmarks/peak_share.py $(ARGS)
	$(BIN)/python benchmarks/loop_overhead.py
	$(BIN)/python benchmarks/ddp_efficiency.py
	$(BIN)/python benchmarks/phema.py
	$(BIN)/python benchmarks/formulations.py --steps-only
	$(BIN)/python benchmarks/latent_cache.py
	$(BIN)/python benchmarks/png_writers.py

# On one CUDA GPU, at most ~8 min: train steps and sampling beside diffusers, batch_size=auto, a 200-step
# cifar10_ddpm run with FID, a 1-GPU NCCL DDP run, sample.py on 2 GPUs under torchrun (skipped with one GPU);
# exits non-zero on any failure (benchmarks/gpu_check.py).
gpu-check: setup
	$(BIN)/python benchmarks/gpu_check.py --json outputs/gpu_check.json $(ARGS)

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean-venv:
	rm -rf $(VENV)
