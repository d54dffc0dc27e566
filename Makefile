# V2V on C3D's Caffe. `make demo` and `make test` set up what is missing first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.setup-ok

.PHONY: setup setup-torch demo test bench prototxt cuda-check clean-engine help

help:
	@echo "make demo        set up, then train/evaluate V2V on a small synthetic dataset (runs/demo/)"
	@echo "make test        set up, then run the test suite"
	@echo "make bench       throughput benchmarks (results in runs/bench/)"
	@echo "make prototxt    regenerate prototxt/ from models/"
	@echo "make cuda-check  compile our CUDA layers with nvcc (needs nvcc; not part of make test)"

# Always runs engine/setup.sh: it is idempotent and returns in seconds when all is there.
setup:
	@bash engine/setup.sh

setup-torch:
	@bash engine/setup.sh --with-torch

demo: setup
	$(PY) -m tools.demo

test: setup-torch
	@bash tests/run.sh

bench: setup-torch
	$(PY) -m tools.bench

prototxt: setup
	$(PY) -m models.generate

cuda-check:
	@bash engine/cuda_check.sh

clean-engine:
	rm -rf $(VENV) $${V2V_ENGINE_CACHE:-$$HOME/.cache/v2v-engine}
