# recap-pipeline: `make run` (set up + the main job), `make test` (set up + lint + tests).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS := configs/constraints.txt
# The venv is rebuilt only when the pins or the package metadata change.
PIN_HASH := $(shell cat $(CONSTRAINTS) pyproject.toml | sha256sum | cut -c1-16)
STAMP := $(VENV)/.setup-$(PIN_HASH)
PIP := $(BIN)/python -m pip install --disable-pip-version-check -c $(CONSTRAINTS)

RUN_DIR ?= runs/local
RUN_ROWS ?= 200000
PYTEST_ARGS ?=

.PHONY: help setup test test-fast lint run run-containers bench gpu-check images images-local push-images clean system-deps

help:
	@echo "make setup  create .venv with the pinned stack (idempotent)"
	@echo "make test   setup + ruff + images + pytest (everything, containers included)"
	@echo "make test-fast  setup + ruff + unit tests only (~1 min)"
	@echo "make run    setup + the main job (see README)"
	@echo "make bench  setup + benchmarks (writes BENCHMARKS.md)"
	@echo "make gpu-check  on a machine with one CUDA GPU: speed, memory, syncs, a round trip vs CPU (docs/gpu.md)"
	@echo "make images-local  build the CPU images on this host (no registry needed)"
	@echo "make run-containers  the main job with every step in its container"

setup: $(STAMP)

$(STAMP): $(CONSTRAINTS) pyproject.toml
	@rm -f $(VENV)/.setup-*
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip setuptools wheel
	# torch first: torch==2.13.0 resolves to the CPU wheel this machine keeps on disk.
	$(PIP) torch==2.13.0
	# fbgemm-gpu-cpu stands in for fbgemm-gpu (the CUDA build) on CPU machines.
	$(PIP) fbgemm-gpu-cpu==1.8.0
	# torchrec's metadata requires the CUDA fbgemm-gpu, hence --no-deps plus its small deps.
	$(PIP) --no-deps torchrec==1.8.0
	$(PIP) tensordict tqdm pyre-extensions
	$(PIP) -e '.[dev]'
	@touch $@

lint: setup
	$(BIN)/ruff check .

# The container tests need the images: built (or found, by their context-hash tags) first.
test: setup lint system-deps images-local
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The inner loop: everything but the integration tests (torchrun, kfp.local DAGs, emulator, browser).
test-fast: setup lint
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

# Headless Chromium renders the HTML reports in tests; installed from Debian when we are root.
system-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
	      || echo "note: installing chromium failed; the report rendering tests will be skipped"; \
	  else echo "note: chromium not installed; the report rendering tests will be skipped"; fi; }

# The newcomer's main job: generate local data, run the whole compiled DAG through kfp.local,
# print the per-task evaluation table and where the report and the model are.
run: setup
	$(BIN)/recap data generate --schema local --rows $(RUN_ROWS) --files 4 --seed 1 --out $(RUN_DIR)/raw
	@# Step logs (kfp.local echoes every step) go to a file; on failure their tail is shown.
	$(BIN)/recap pipeline run --raw $(RUN_DIR)/raw --root $(RUN_DIR) --summary 2> $(RUN_DIR)/pipeline.log \
	  || { tail -n 40 $(RUN_DIR)/pipeline.log; echo "step logs: $(RUN_DIR)/pipeline.log"; exit 1; }
	@echo "  step logs:          $(RUN_DIR)/pipeline.log"

bench: setup
	$(BIN)/python -m benchmarks.run_all

# On one CUDA GPU (docs/gpu.md); without one it says so and exits 0. GPU_CHECK_ARGS: e.g. --real-rows 0.
GPU_CHECK_ARGS ?=
gpu-check: setup
	$(BIN)/python -m benchmarks.gpu_check $(GPU_CHECK_ARGS)

# Here (no registry, no buildx): the CPU images from a local base, tagged by a hash of the
# build context; starts an engine first if none answers (docker/build.py).
images-local:
	@$(PYTHON) docker/build.py images > /dev/null

# The main job with every step in its own container (the images this tree builds), data_root
# on a GCS emulator on loopback whose files stay under $(RUN_DIR)/gcs.
run-containers: setup
	$(BIN)/recap data generate --schema local --rows $(RUN_ROWS) --files 4 --seed 1 --out $(RUN_DIR)/raw
	$(BIN)/python -m pipeline.docker_run --raw $(RUN_DIR)/raw --emulator-dir $(RUN_DIR)/gcs -- --summary \
	  2> $(RUN_DIR)/pipeline-containers.log \
	  || { tail -n 40 $(RUN_DIR)/pipeline-containers.log; echo "step logs: $(RUN_DIR)/pipeline-containers.log"; exit 1; }
	@echo "  step logs:          $(RUN_DIR)/pipeline-containers.log"

# All six images, the CUDA train image included: a Docker host with buildx and registry access.
images:
	REVISION=$$(git rev-parse HEAD) docker buildx bake -f docker/docker-bake.hcl

push-images:
	REVISION=$$(git rev-parse HEAD) docker buildx bake -f docker/docker-bake.hcl --push

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
