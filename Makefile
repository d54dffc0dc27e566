# V2V on C3D's Caffe. `make demo` and `make test` set up what is missing first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup setup-torch setup-dev demo test test-fast lint bench prototxt cuda-check clean-engine help

help:
	@echo "make demo        set up, then train/evaluate V2V on a small synthetic dataset (runs/demo/)"
	@echo "make test        set up, then run the whole test suite (what CI runs)"
	@echo "make test-fast   the suite without the slow end-to-end tests (the edit loop, ~3 min)"
	@echo "make lint        ruff and the import-direction contract (also run by the suite)"
	@echo "make bench       throughput benchmarks (results in runs/bench/)"
	@echo "make prototxt    regenerate prototxt/, models/NETS.md and the README tables from models/"
	@echo "make cuda-check  compile our CUDA layers with nvcc (needs nvcc; not part of make test)"

# Always runs engine/setup.sh: it is idempotent and returns in seconds when all is there.
setup:
	@bash engine/setup.sh

setup-torch:
	@bash engine/setup.sh --with-torch

setup-dev:
	@bash engine/setup.sh --with-torch --dev

demo: setup
	$(PY) -m tools.demo

test: setup-dev
	@bash tests/run.sh

test-fast: setup-dev
	@bash tests/run.sh -m "not slow"

lint: setup-dev
	@bash tests/lint.sh

bench: setup-torch
	$(PY) -m tools.bench

# The generator is pure Python: it needs the venv's packages, not the engine.
prototxt:
	@bash engine/setup.sh --no-engine
	$(PY) -m models.generate

cuda-check:
	@bash engine/cuda_check.sh

clean-engine:
	rm -rf $(VENV) $${V2V_ENGINE_CACHE:-$$HOME/.cache/v2v-engine}
