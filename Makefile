# rnnlab developer commands. `make help` lists them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# CPU wheel by default (CI, laptops). For CUDA, see README "GPU": one variable changes.
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=
PYTEST_ARGS ?=
# pytest-xdist workers: one per core (each gets its share of the threads, tests/conftest.py);
# each module runs whole on one worker, so its module-scoped fixtures are built once
TEST_WORKERS ?= auto
XDIST := -n $(TEST_WORKERS) --dist loadscope

.DEFAULT_GOAL := help
.PHONY: help install install-spark test test-all lint format bench clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-10s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python ## Create .venv and install rnnlab with its dev tools (CPU torch)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@$(BIN)/rnnlab --version

install-spark: $(BIN)/python ## Add pyspark to .venv for the Spark UDF test (needs Java 17+)
	$(BIN)/python -m pip install --quiet "pyspark>=3.5,<5"
	@command -v java >/dev/null || echo "no java: apt-get install default-jre-headless"

test: ## Run the fast test suite (no GPU, no network)
	$(BIN)/python -m pytest -q $(XDIST) $(PYTEST_ARGS)

test-all: ## Run every test, slow ones included (GPU/browser tests skip where unavailable)
	$(BIN)/python -m pytest -q $(XDIST) -m "" $(PYTEST_ARGS)

lint: ## Check style (ruff) and the layer contract (import-linter)
	$(BIN)/ruff check rnnlab tests scripts
	$(BIN)/ruff format --check rnnlab tests scripts
	$(BIN)/lint-imports

format: ## Format and auto-fix with ruff
	$(BIN)/ruff format rnnlab tests scripts
	$(BIN)/ruff check --fix rnnlab tests scripts

bench: ## Run the benchmarks in scripts/ (ratios against baselines run side by side)
	@for s in scripts/bench_*.py; do [ -e "$$s" ] || continue; echo "== $$s"; $(BIN)/python $$s || exit 1; done

clean: ## Remove caches, build outputs and local run stores
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info outputs multirun
