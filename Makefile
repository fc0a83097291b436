# The two commands of the README: `make demo` and `make test`, each from a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The Redis store's tests start their own redis-server (Debian's package, never its service).
REDIS  := /usr/bin/redis-server

.PHONY: demo test lint typecheck bench-core bench-state bench-store bench-transport bench-elastic bench-trace clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Installed only when missing; CI runs as root on Debian.
$(REDIS):
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP) $(REDIS) lint typecheck
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench-core: $(VENV)/.bench-installed
	$(PY) bench/core.py

bench-state: $(VENV)/.bench-installed $(REDIS)
	$(PY) bench/state.py

bench-store: $(VENV)/.bench-installed $(REDIS)
	$(PY) bench/store.py

bench-transport: $(VENV)/.bench-installed
	$(PY) bench/transport.py

bench-elastic: $(VENV)/.bench-installed
	$(PY) bench/elastic.py

bench-trace: $(VENV)/.bench-installed
	$(PY) bench/trace.py

clean:
	rm -rf $(VENV) .stratus .pytest_cache .mypy_cache .ruff_cache
