# The two commands of the README: `make demo` and `make test`, each from a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The Redis store's tests start their own redis-server (Debian's package, never its service).
REDIS  := /usr/bin/redis-server
# FUSE: the mount helper (fusermount3) and the headers pyfuse3 compiles against.
FUSE   := /usr/bin/fusermount3 /usr/include/fuse3/fuse_lowlevel.h /usr/bin/pkg-config

.PHONY: demo test lint typecheck bench bench-quick bench-core bench-state bench-store bench-transport bench-fs bench-fuse bench-elastic bench-trace clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Installed only when missing; CI runs as root on Debian.
$(REDIS):
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server

# Installed only when missing; one apt run for all three (a grouped target).
$(FUSE) &:
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fuse3 libfuse3-dev pkg-config

$(STAMP): pyproject.toml | $(VENV)/bin/python $(FUSE)
	$(PY) -m pip install --quiet -e '.[dev,fuse]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py

# The bench extra too: a smoke test runs the benchmark suite on a tiny configuration.
test: $(VENV)/.bench-installed $(REDIS) lint typecheck
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

$(VENV)/.bench-installed: $(STAMP)
	$(PY) -m pip install --quiet -e '.[dev,fuse,bench]'
	touch $@

# The whole suite (under 10 minutes): bench/results/*.json, docs/benchmarks.md, docs/img/.
bench: $(VENV)/.bench-installed $(REDIS)
	$(PY) bench/suite.py

# A one-minute subset into bench/results/quick/ (its report.md and img/ beside the JSON).
bench-quick: $(VENV)/.bench-installed $(REDIS)
	$(PY) bench/suite.py --quick

bench-core: $(VENV)/.bench-installed $(REDIS)
	$(PY) bench/core.py

bench-state: $(VENV)/.bench-installed $(REDIS)
	$(PY) bench/state.py

bench-store: $(VENV)/.bench-installed $(REDIS)
	$(PY) bench/store.py

bench-fs: $(VENV)/.bench-installed
	$(PY) bench/fs.py

bench-transport: $(VENV)/.bench-installed
	$(PY) bench/transport.py

bench-fuse: $(VENV)/.bench-installed
	$(PY) bench/fuse.py

bench-elastic: $(VENV)/.bench-installed
	$(PY) bench/elastic.py

bench-trace: $(VENV)/.bench-installed
	$(PY) bench/trace.py

clean:
	rm -rf $(VENV) .stratus .pytest_cache .mypy_cache .ruff_cache
