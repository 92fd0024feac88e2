# The two commands of the README: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install services demo test lint unit bench compose-secrets compiled clean-compiled

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Janus needs Python 3.11+"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

services:
	./scripts/ensure-services

demo: install services
	$(VENV)/bin/janus demo

lint: install
	$(PY) -m ruff check janus tests benchmarks
	$(PY) -m ruff format --check janus tests benchmarks
	$(PY) -m mypy

test: install services lint
	$(PY) -m pytest -q

unit: install
	$(PY) -m pytest -q tests/unit

# The core and the simulation engine compiled with mypyc, in place (scripts/compile_core.py):
# `janus simulate` about twice as fast. Needs a C compiler; clean-compiled goes back to Python.
compiled: install
	$(PY) scripts/compile_core.py

clean-compiled:
	find janus -name '*.so' -delete
	rm -rf build/mypyc

# docker-compose.yml's broker passwords and Janus's AMQP URL, random, in deploy/secrets/ (kept if there).
compose-secrets: install
	$(PY) -m janus.broker.definitions --config config/janus.toml --password-dir deploy/secrets --create-passwords \
		--rabbitmq-version 3.10 --allow-unchecked-cc

bench: install services
	$(PY) benchmarks/throughput.py
