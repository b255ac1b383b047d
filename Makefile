# Quick start: `make demo` and `make test`. Both create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
# Our machines have a CPU wheel of torch 2.13.0 on disk; unpinned torch pulls a multi-GB CUDA build.
# GPU users: make install TORCH="torch==2.13.0" TORCH_PIP_ARGS="--index-url <your CUDA wheel index>"
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Prefect keeps its state inside the project and never phones home; nothing may fetch model weights.
export PREFECT_HOME := $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1

.PHONY: install demo pool-demo test quick-test lint format clean bench bench-reference

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_PIP_ARGS) "$(TORCH)"
	$(BIN)/pip install -q -e '.[dev]'
	# The real CLIP BPE vocabulary for the tiny test model ships in this wheel; --no-deps because its
	# own dependencies would pull torchvision, which we neither need nor can import beside this torch.
	$(BIN)/pip install -q --no-deps open_clip_torch==3.3.0
	touch $(STAMP)

install: $(STAMP)

# DEMO_ARGS=--c2pa also signs every card with a test certificate (C2PA).
demo: install
	$(BIN)/python -m product_studio.devkit.demo $(DEMO_ARGS)

# The distributed path on this machine: Prefect server, work pools, two SKU workers, the catalogue deployment.
pool-demo: install
	$(BIN)/python -m product_studio.devkit.pool_demo $(POOL_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two workers, a whole test file each at a time (module fixtures run once), in the order the tests are
# collected (--no-loadscope-reorder: xdist would start the files with the most tests first), which puts the
# longest files first (tests/conftest.py). Every test process uses one core (OMP_NUM_THREADS=1).
test: lint
	$(BIN)/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder

# Every test but the end-to-end runs and real waits (pytest -m "not slow"): a few minutes while you work.
quick-test: install
	$(BIN)/python -m pytest -m "not slow" -n 2 --dist loadfile --no-loadscope-reorder

# Benchmarks (bench/README.md). `bench` runs our trainer alone; `bench-reference` also runs diffusers'
# train_dreambooth_lora.py (REFERENCE=path/to/it; FAMILY=flux2-klein with train_dreambooth_lora_flux2_klein.py)
# in .venv-bench, whose torch can import torchvision.
FAMILY ?= sd
bench: install
	$(BIN)/python bench/train_vs_reference.py --steps 300 --variant-steps 100

bench-reference:
	@test -n "$(REFERENCE)" || (echo "usage: make bench-reference REFERENCE=path/to/train_dreambooth_lora.py"; exit 2)
	test -x .venv-bench/bin/python || $(PYTHON) -m venv .venv-bench
	.venv-bench/bin/pip install -q torch==2.14.1 torchvision==0.29.1
	.venv-bench/bin/pip install -q -e . && .venv-bench/bin/pip install -q --no-deps open_clip_torch==3.3.0
	.venv-bench/bin/python bench/train_vs_reference.py --reference "$(REFERENCE)" --family $(FAMILY) --steps 1000

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .venv-bench .prefect .demo .pool-demo demo-output .pytest_cache .ruff_cache
