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
SEARCHES ?=
SMOKE ?=
FMNIST_DIR := /usr/share/datasets/fashion-mnist
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# hpo's hints then name the make form of what to run next (`make study NAME=wide`, not `hpo study wide`).
export HPO_MAKE := 1

.DEFAULT_GOAL := help
TARGETS := help install data study reproduce test check lint export compare report dashboard bench load proxy activations clean
.PHONY: $(TARGETS)
# `make study relu3_adam` would run the default study and then fail on `relu3_adam`: stop before anything runs.
STRAY := $(filter-out $(TARGETS),$(MAKECMDGOALS))
ifneq ($(STRAY),)
$(error `make $(MAKECMDGOALS)`: $(firstword $(STRAY)) is not a target (`make help` lists them); to name a study, write `make $(or $(firstword $(filter $(TARGETS),$(MAKECMDGOALS))),study) NAME=$(firstword $(STRAY))`)
endif

# A variable the named target does not use stops it with one line (`make dashboard SMOKE=1` would otherwise quietly
# show what it always shows). make itself rejects `--smoke` before it reads this file: write SMOKE=1.
USES_study := NAME SMOKE WORKERS ARGS
USES_reproduce := NAME SMOKE WORKERS SEEDS SEARCHES ARGS
USES_export := NAME SMOKE ARGS
USES_compare := NAME SMOKE SEEDS ARGS
USES_report := NAME SMOKE ARGS
USES_dashboard := ARGS
USES_activations := ARGS
USES_bench := ARGS
USES_test := ARGS
unused = $(strip $(foreach v,NAME SMOKE WORKERS SEEDS SEARCHES ARGS,$(if $(filter command line,$(origin $(v))),$(if $(filter $(v),$(USES_$(1))),,$(v)))))
$(foreach g,$(filter $(TARGETS),$(MAKECMDGOALS)),$(if $(call unused,$(g)),$(error `make $(g)` does not use $(firstword $(call unused,$(g)))= (`make help` lists what each target takes))))

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: NAME=<study> ARGS=\"<extra hpo arguments>\" WORKERS=<n> SEEDS=<n> SEARCHES=<n> (reproduce) SMOKE=1 (tiny scale for study, export, compare, report, reproduce; make itself rejects --smoke)"

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	@touch $@

install: $(BIN)/.installed ## create .venv and install hpo with its dependencies

data: data/digits.npz ## install Fashion-MNIST (Debian package dataset-fashion-mnist) and write data/digits.npz
	@if [ -n "$$HPO_DATA_DIR" ] || [ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ]; then exit 0; fi; \
	if command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null; }; then \
	  echo "installing Fashion-MNIST: apt-get install dataset-fashion-mnist"; \
	  $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q dataset-fashion-mnist >/dev/null; }; \
	else echo "no apt-get here: put the Fashion-MNIST IDX files in a folder and set HPO_DATA_DIR"; fi

# scikit-learn's bundled digits, in the .npz form `dataset: {path: …}` reads (studies/digits.yaml)
data/digits.npz: | $(BIN)/.installed
	$(BIN)/python -m hpo.tools.datasets digits $@

study: install data ## run (or resume) a study: make study NAME=relu3_adam [ARGS="--trials 60"] [WORKERS=2]
	$(BIN)/hpo study $(NAME) $(SMOKE_FLAG) $(if $(WORKERS),--workers $(WORKERS)) $(ARGS)

# reproduce: the folder, the --smoke flag and compare --smoke's scale (hpo/results/compare.py SMOKE), so that the
# optimum `hpo train` measures is exactly the run compare would make, and compare takes it (--reuse).
RUN = runs/$(NAME)$(if $(SMOKE),-smoke)
SMOKE_FLAG = $(if $(SMOKE),--smoke)
TRAIN_SCALE = $(if $(SMOKE),--epochs 1 --train-limit 3000 --eval-limit 1000)
N_SEEDS = $(or $(SEEDS),$(if $(SMOKE),2,3))
N_SEARCHES = $(or $(SEARCHES),1)
SEQ := 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20

reproduce: install data ## the whole audit: study, export, train, compare, report: make reproduce NAME=relu3_adam [SEEDS=5] [SEARCHES=3]
	$(BIN)/hpo study $(NAME) $(SMOKE_FLAG) $(if $(WORKERS),--workers $(WORKERS)) $(ARGS)
	@# SEARCHES=N: N independent searches (NAME, NAME-search2, ...: their own seeds); compare gives the optimum over them
	$(foreach k,$(wordlist 2,$(N_SEARCHES),$(SEQ)),$(BIN)/hpo study $(NAME) --search $(k) $(SMOKE_FLAG) $(if $(WORKERS),--workers $(WORKERS)) $(ARGS) &&) true
	$(BIN)/hpo export $(NAME) $(SMOKE_FLAG)
	@# a multi-objective study exports its Pareto set; compare's optimum is its most accurate member, pareto1
	$(BIN)/hpo train $$(test -f $(RUN)/best.yaml && echo $(RUN)/best.yaml || echo $(RUN)/pareto1.yaml) \
	  --seeds $(N_SEEDS) $(TRAIN_SCALE) --json $(RUN)/train.json
	$(BIN)/hpo compare $(NAME) $(SMOKE_FLAG) --seeds $(N_SEEDS) --reuse $(RUN)/train.json --searches $(N_SEARCHES)
	@echo "the report: $(RUN)/report.md (its pictures beside it); the dashboard: make dashboard, then open http://127.0.0.1:8080/dashboard"

TEST_JOBS ?= 2
test: install data ## run the test suite (TEST_JOBS=2 processes; the process-heavy tests one after another in one)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadgroup $(ARGS)

check: install ## validate every shipped study, search space and paper
	$(BIN)/hpo check studies/*.yaml search_spaces/*.yaml papers/*.yaml

lint: install ## ruff over the package and tests
	$(BIN)/ruff check hpo tests

export: install ## export the best configs of a study: make export NAME=relu3_adam
	$(BIN)/hpo export $(NAME) $(SMOKE_FLAG) $(ARGS)

compare: install data ## re-run the paper's configs and the study's best on the test set: make compare NAME=relu3_adam
	$(BIN)/hpo compare $(NAME) $(SMOKE_FLAG) $(if $(SEEDS),--seeds $(SEEDS)) $(ARGS)

report: install ## re-write runs/NAME/report.md from storage, re-running nothing: make report NAME=relu3_adam
	$(BIN)/hpo report $(NAME) $(SMOKE_FLAG) $(ARGS)

dashboard: install ## serve optuna-dashboard on the project's storage (127.0.0.1:8080)
	$(BIN)/hpo dashboard $(ARGS)

# The load test starts its own throwaway PostgreSQL cluster on loopback (Debian's postgresql). Not in `make test`.
load: install data ## many workers on PostgreSQL, directly and through hpo proxy, some killed: make load ARGS="--workers 8,32 --trials 2000"
	$(BIN)/python -m hpo.bench.load $(ARGS)

proxy: install ## serve Optuna's gRPC storage proxy: make proxy ARGS="--storage postgresql://... --port 13000"
	$(BIN)/hpo proxy $(ARGS)

activations: install ## plot the activation functions and print their properties
	$(BIN)/hpo activations $(ARGS)

bench: install data ## measure throughput, search efficiency, scaling, overhead and packs; writes BENCHMARKS.md
	$(BIN)/hpo bench $(ARGS)

clean: ## remove runs/ (studies, exports, reports); keeps .venv
	rm -rf runs
