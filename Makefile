# The two commands a newcomer needs: `make run` and `make test`.
# Everything else the project needs is installed into .venv by these targets.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The mypyc-compiled inventory core (cluster/native.py). Rebuilt whenever a core module (or the
# build script) changes;
# without a C compiler the manifest records why and the core runs interpreted.
NATIVE := build/native/actors/inventory/MANIFEST.json

.PHONY: run test loadtest bench

run: $(STAMP) $(NATIVE)
	$(BIN)/ticketing up --demo

test: $(STAMP) $(NATIVE)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The on-sale Locust scenarios against a cluster of their own: a 60 s spike, report in
# loadtest/reports/ (docs/loadtesting.md). LOADTEST_ARGS="--seconds 120 --users 40" to change it.
loadtest: $(STAMP) $(NATIVE)
	$(BIN)/python -m loadtest.locust_run $(LOADTEST_ARGS)

# HTTP holds against the alternatives, one run (docs/BENCHMARKS.md); BENCH_ARGS="--quick" for
# the 3-minute version. The load generator is Debian's wrk, installed here when missing.
bench: $(STAMP) $(NATIVE)
	command -v wrk >/dev/null || (apt-get install -y -qq wrk >/dev/null 2>&1 || \
	  (apt-get update -qq && apt-get install -y -qq wrk)) || { echo "install wrk (Debian: apt-get install wrk)"; exit 1; }
	$(BIN)/python -m loadtest.bench $(BENCH_ARGS)

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(NATIVE): $(STAMP) $(wildcard actors/inventory/*.py) cluster/native.py
	$(BIN)/python -m cluster.native
