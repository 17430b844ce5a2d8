# The README's two commands are `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000
DEMO_CALLS ?= 3000

.DEFAULT_GOAL := help
.PHONY: help install run test lint format fuzz bench asterisk citus citus-stop pbx-demo pbx-calls clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-9s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP) ## Create the virtualenv and install the package with its dev tools

run: $(STAMP) ## Serve the API from a SQLite file with demo data; prints a token
	PUBLIC_URL=$${PUBLIC_URL:-http://$(HOST):$(PORT)} $(BIN)/callhistory demo --calls $(DEMO_CALLS)
	$(BIN)/callhistory serve --host $(HOST) --port $(PORT)

test: $(STAMP) ## Run the whole test suite (SQLite; PostgreSQL when DATABASE_URL is set)
	$(BIN)/pytest

lint: $(STAMP) ## ruff check, ruff format --check, mypy --strict
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: $(STAMP) ## Format the code with ruff
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

fuzz: $(STAMP) ## schemathesis against /openapi.json on a live server (DATABASE_URL honoured)
	scripts/fuzz.sh $${MAX_EXAMPLES:-100}

asterisk: ## Build the test PBX (Asterisk from ../shared/vendor) for the tests marked pbx
	scripts/asterisk.sh build

citus: ## Build Citus from ../shared/vendor (once) and start a local 3-node cluster in data/citus
	scripts/citus-cluster.sh start

citus-stop: ## Stop the local Citus cluster (scripts/citus-cluster.sh remove deletes it)
	scripts/citus-cluster.sh stop

pbx-demo: $(STAMP) asterisk ## Run the test PBX, feeding its calls into the demo account (Ctrl-C stops)
	$(BIN)/python -m tests.realpbx demo data/pbx

pbx-calls: $(STAMP) ## Place a few calls through the test PBX of `make pbx-demo`
	$(BIN)/python -m tests.realpbx calls data/pbx

bench: $(STAMP) ## Benchmark the list endpoint at 1M calls (by hand; see bench/README.md)
	$(BIN)/python -m bench.list_calls

clean: ## Remove the virtualenv and the local data folder
	rm -rf $(VENV) data
