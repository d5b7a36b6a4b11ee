# Every target installs what it needs first, so a fresh clone needs only python3 (3.11+) and make.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
export UV_PYTHON_DOWNLOADS := never
# Bytecode compiled once at install: where PYTHONDONTWRITEBYTECODE is set (this machine, CI images)
# every process (four pytest workers, each service a test starts) would otherwise compile every
# library from source at each import, seconds of CPU each time.
export UV_COMPILE_BYTECODE := 1
# ...and the project's own modules (and pytest's rewritten test modules) are cached after first use.
unexport PYTHONDONTWRITEBYTECODE
RUN := $(UV) run --frozen --extra dev

.PHONY: install run test lint typecheck check openapi bench sandbox clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

install: $(UV)
	$(UV) sync --frozen --extra dev

# Ports of `make run`: make run PORT=8001 SANDBOX_PORT=8092 RECEIVER_PORT=8093
PORT ?= 8000
SANDBOX_PORT ?= 8090
RECEIVER_PORT ?= 8091

run: install  ## the service in dev mode: embedded Redis-compatible server and Autocall sandbox
	$(RUN) otpservice dev --port $(PORT) --sandbox-port $(SANDBOX_PORT) --receiver-port $(RECEIVER_PORT)

sandbox: install
	$(RUN) otpservice sandbox --host 127.0.0.1 --port $(SANDBOX_PORT)

lint: install
	$(RUN) ruff check .
	$(RUN) ruff format --check .

typecheck: install
	$(RUN) mypy

test: install lint typecheck  ## the one test command: lint, types, then the whole suite
	$(RUN) pytest

# Options of the benchmark run: make bench BENCH_ARGS=--quick (a smoke test of about 2 minutes); see
# `python -m bench.report --help`. Each bench/ module also runs on its own.
BENCH_ARGS ?=

bench: $(UV)  ## every benchmark in one run (about 6 min, outside CI): writes docs/benchmarks.md and its plots
	$(UV) sync --frozen --extra dev --group bench
	$(RUN) --group bench python -m bench.report $(BENCH_ARGS)

openapi: install  ## regenerate the published contract from the app
	$(RUN) otpservice openapi > openapi.yaml

clean:
	rm -rf $(TOOLS) .venv .pytest_cache .mypy_cache .ruff_cache
