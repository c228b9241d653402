# hpo: `make study NAME=relu3_adam` runs a study, `make test` runs the tests. `make help` lists the rest.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The machine's CPU build of torch; an unpinned torch would pull several GB of CUDA packages.
TORCH ?= torch==2.13.0
NAME ?= relu3_adam
ARGS ?=
WORKERS ?=
SEEDS ?=
FMNIST_DIR := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.DEFAULT_GOAL := help
.PHONY: help install data study test check lint export compare report dashboard bench activations clean

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: NAME=<study> ARGS=\"<extra hpo arguments>\" WORKERS=<n> SEEDS=<n>"

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

install: $(BIN)/.installed ## create .venv and install hpo with its dependencies

data: ## install Fashion-MNIST (Debian package dataset-fashion-mnist) unless it or HPO_DATA_DIR is there
	@if [ -n "$$HPO_DATA_DIR" ] || [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then exit 0; fi; \
	if command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null; }; then \
	  echo "installing Fashion-MNIST: apt-get install dataset-fashion-mnist"; \
	  $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
	else echo "no apt-get here: put the Fashion-MNIST IDX files in a folder and set HPO_DATA_DIR"; fi

study: install data ## run (or resume) a study: make study NAME=relu3_adam [ARGS="--trials 60"] [WORKERS=2]
	$(BIN)/hpo study $(NAME) $(if $(WORKERS),--workers $(WORKERS)) $(ARGS)

test: install data ## run the test suite
	$(BIN)/python -m pytest -q $(ARGS)

check: install ## validate every shipped study and search space
	$(BIN)/hpo check studies/*.yaml search_spaces/*.yaml

lint: install ## ruff over the package and tests
	$(BIN)/ruff check hpo tests

export: install ## export the best configs of a study: make export NAME=relu3_adam
	$(BIN)/hpo export $(NAME) $(ARGS)

compare: install data ## re-run the paper's configs and the study's best on the test set: make compare NAME=relu3_adam
	$(BIN)/hpo compare $(NAME) $(if $(SEEDS),--seeds $(SEEDS)) $(ARGS)

report: install ## re-write runs/NAME/report.md from storage, re-running nothing: make report NAME=relu3_adam
	$(BIN)/hpo report $(NAME) $(ARGS)

dashboard: install ## serve optuna-dashboard on the project's storage (127.0.0.1:8080)
	$(BIN)/hpo dashboard $(ARGS)

activations: install ## plot the activation functions and print their properties
	$(BIN)/hpo activations $(ARGS)

bench: install data ## measure throughput, search efficiency, scaling and overhead; writes BENCHMARKS.md
	$(BIN)/hpo bench $(ARGS)

clean: ## remove runs/ (studies, exports, reports); keeps .venv
	rm -rf runs
