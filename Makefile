# V2V on C3D's Caffe. `make demo` and `make test` set up what is missing first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-torch setup-dev setup-cuda setup-cpu demo test test-fast test-gpu gpu-check docker-check slurm-check lint bench prototxt clean-engine help

help:
	@echo "make demo        set up, then train/evaluate V2V on a small synthetic dataset (runs/demo/)"
	@echo "make test        set up, then run the whole test suite (what CI runs)"
	@echo "make test-fast   the suite without the slow end-to-end tests (the edit loop, ~3 min)"
	@echo "make lint        ruff and the import-direction contract (also run by the suite)"
	@echo "make bench       throughput benchmarks (results in runs/bench/)"
	@echo "make prototxt    regenerate prototxt/, models/NETS.md and the README tables from models/"
	@echo "make setup-cuda  switch this venv to the CUDA engine build (no GPU needed to build)"
	@echo "make setup-cpu   switch back to the CPU-only engine build (the default)"
	@echo "make test-gpu    the GPU tests alone, on the CUDA build; fails where no GPU is usable"
	@echo "make gpu-check   on a GPU machine: CUDA build + GPU tests + benchmarks, logs in runs/gpu_check/"
	@echo "make docker-check build the CPU and GPU images and run the suite and the demo in them"
	@echo "make slurm-check the cluster/ Slurm scripts under a private Slurm here (as root; installs slurm-wlm, munge)"

# Always runs engine/setup.sh: it is idempotent and returns in seconds when all is there.
setup:
	@bash engine/setup.sh

setup-torch:
	@bash engine/setup.sh --with-torch

setup-dev:
	@bash engine/setup.sh --with-torch --dev

setup-cuda:
	@bash engine/setup.sh --cuda --with-torch --dev

setup-cpu:
	@bash engine/setup.sh --cpu --with-torch --dev

demo: setup-torch
	$(PY) -m tools.demo

test: setup-dev
	@bash tests/run.sh

test-fast: setup-dev
	@bash tests/run.sh -m "not slow"

test-gpu: setup-cuda
	@bash tests/run.sh -m gpu --require-gpu

gpu-check:
	@bash tests/gpu_check.sh

# Not part of `make test`: it takes the better part of an hour (docker/README.md).
docker-check:
	@bash docker/check.sh

# Not part of `make test`: it installs Debian packages and starts daemons (cluster/README.md).
slurm-check: setup-torch
	@bash cluster/slurm_check.sh

lint: setup-dev
	@bash tests/lint.sh

bench: setup-torch
	$(PY) -m tools.bench

# The generator is pure Python: it needs the venv's packages, not the engine.
prototxt:
	@bash engine/setup.sh --no-engine
	$(PY) -m models.generate

clean-engine:
	rm -rf $(VENV) $${V2V_ENGINE_CACHE:-$$HOME/.cache/v2v-engine}
