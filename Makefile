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

bench: install  ## argon2 cost, Redis memory, HTTP throughput and latency, budget cost, webhooks, edge limits
	$(RUN) python -m bench.argon2_cost
	$(RUN) python -m bench.redis_memory
	$(RUN) python -m bench.load
	$(RUN) python -m bench.start_cost
	$(RUN) python -m bench.webhook_latency
	$(RUN) python -m bench.edge --seconds 3
	$(RUN) python -m bench.verify_overload
	$(RUN) python -m bench.verify_cpu
	$(RUN) python -m bench.peer_better_auth

openapi: install  ## regenerate the published contract from the app
	$(RUN) otpservice openapi > openapi.yaml

clean:
	rm -rf $(TOOLS) .venv .pytest_cache .mypy_cache .ruff_cache
