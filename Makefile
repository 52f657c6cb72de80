# Every target creates .venv on first use and installs what it needs there:
# the project itself (editable, so `saga` and `accounts-service` are on
# .venv/bin) with its pinned runtime dependencies, and, for the development
# targets, the pinned dev group too (requirements.txt). A stamp per layer:
# a second run installs nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(BIN)/pip --quiet --disable-pip-version-check
RUNTIME := $(VENV)/.installed-runtime
STAMP := $(VENV)/.installed-requirements

.DEFAULT_GOAL := help
.PHONY: help venv requirements run serve test lint typecheck check-generated generate contract evaluate mutation bench simulate clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(RUNTIME): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --editable .
	touch $(RUNTIME)

$(STAMP): $(RUNTIME) requirements.txt
	$(PIP) install -r requirements.txt
	touch $(STAMP)

venv: $(STAMP) ## the development environment in .venv: the project, its runtime and the dev group

requirements: ## rewrite requirements.txt: the runtime dependencies and the dev group of pyproject.toml, pinned
	{ echo '# Written by make requirements: the runtime dependencies and the dev group of pyproject.toml. Edit those.'; \
	  $(PYTHON) -c 'import tomllib; project = tomllib.load(open("pyproject.toml", "rb")); print(*sorted(project["project"]["dependencies"] + project["dependency-groups"]["dev"], key=str.lower), sep="\n")'; \
	} > requirements.txt.new
	mv requirements.txt.new requirements.txt

run: $(RUNTIME) ## the demo: two live accounts services, transfers through the saga, and a verified report
	$(PY) -m saga demo

serve: $(RUNTIME) ## run one accounts service on 127.0.0.1:8000 (demo accounts, 30% credit faults)
	$(PY) -m server --host 127.0.0.1 --port 8000

test: $(STAMP) lint typecheck check-generated ## lint, types, client freshness, and every test
	$(PY) -m pytest

lint: $(STAMP) ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP) ## mypy on server/, saga/ and the code that uses the client
	$(BIN)/mypy server saga tests openapi

generate: $(STAMP) ## regenerate both clients in generated_client/ from their contracts in openapi/
	$(PY) openapi/generate.py

check-generated: $(STAMP) ## fail if either client in generated_client/ is stale against its contract
	$(PY) openapi/generate.py --check

contract: $(STAMP) ## schemathesis CLI against live services with both contracts: accounts (faults off, then on), then transfers (without, then with API tokens)
	$(PY) tests/contract/run_schemathesis.py
	$(PY) tests/contract/run_schemathesis_transfers.py

simulate: $(RUNTIME) ## deterministic fault simulation: 50 seeds x 1,000 transfers, with a table of faults and violations
	$(PY) -m saga simulate --seed 1 --seeds 50 --transfers 1000 --jobs 2

evaluate: $(STAMP) ## tests, every scenario, and every known-bad patch; writes evaluation/reports/
	$(PY) -m evaluation.evaluation

mutation: $(STAMP) ## mutation testing of the money rules and the saga core (10 to 15 min); writes evaluation/reports/mutation/
	$(PY) -m evaluation.mutation

bench: $(STAMP) ## throughput and latency side by side, what each ledger store costs, saga workers on PostgreSQL, the transfers service against one batch, reads during a header flood, one replica against two; writes evaluation/bench-results/
	$(PY) -m evaluation.bench
	$(PY) -m evaluation.bench_storage
	$(PY) -m evaluation.bench_workers
	$(PY) -m evaluation.bench_transfers
	$(PY) -m evaluation.bench_header_flood
	$(PY) -m evaluation.bench_replicas

clean: ## remove the venv, caches and local databases
	rm -rf $(VENV) transfer_saga.egg-info build mutants .mypy_cache .ruff_cache .pytest_cache .hypothesis saga.db saga.db-wal saga.db-shm
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
