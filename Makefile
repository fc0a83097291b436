# The two commands of the README: `make demo` and `make test`, each from a fresh machine.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The Redis store's tests start their own redis-server (Debian's package, never its service).
REDIS  := /usr/bin/redis-server
# FUSE: the mount helper (fusermount3) and the headers pyfuse3 compiles against.
FUSE   := /usr/bin/fusermount3 /usr/include/fuse3/fuse_lowlevel.h /usr/bin/pkg-config
# The dashboard's tests drive Debian's chromium with Playwright (which never downloads one).
CHROMIUM := /usr/bin/chromium
# The chaos suite partitions the Redis store with a DROP rule on its loopback port.
IPTABLES := /usr/sbin/iptables

.PHONY: demo test lock lint typecheck bench bench-quick bench-core bench-state bench-store bench-transport bench-fs bench-fuse bench-elastic bench-trace bench-scaleout clean

# uv installs from uv.lock (every package pinned with its hashes; --locked: refused when
# pyproject.toml and the lock disagree), itself pinned with its hashes in uv-bootstrap.txt
# and kept outside the project's venv so that an exact sync never removes it.
UV     := .uv/bin/uv
SYNC   := UV_PROJECT_ENVIRONMENT=$(VENV) $(UV) sync --locked --python python3

$(UV): uv-bootstrap.txt
	python3 -m venv .uv
	.uv/bin/pip install --quiet --require-hashes -r uv-bootstrap.txt

# Installed only when missing; CI runs as root on Debian.
$(REDIS):
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server

# Installed only when missing; one apt run for all three (a grouped target).
$(FUSE) &:
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends fuse3 libfuse3-dev pkg-config

$(CHROMIUM):
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium

$(IPTABLES):
	apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables

# The demo needs the runtime only; --inexact keeps the test tools of an earlier `make test`.
$(VENV)/.runtime: pyproject.toml uv.lock | $(UV)
	$(SYNC) --inexact
	touch $@

# Every extra: dev tools, the FUSE mount, and the bench peers (a smoke test runs the suite).
$(STAMP): pyproject.toml uv.lock | $(UV) $(FUSE)
	$(SYNC) --all-extras
	touch $(STAMP)

# Re-resolve every dependency to its newest allowed release; run `make test` on the result.
lock: $(UV)
	$(UV) lock --upgrade

demo: $(VENV)/.runtime
	$(PY) examples/demo.py

test: $(STAMP) $(REDIS) $(CHROMIUM) $(IPTABLES) lint typecheck
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench examples
	$(VENV)/bin/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# The whole suite (under 20 minutes): bench/results/*.json, docs/benchmarks.md, docs/img/.
bench: $(STAMP) $(REDIS)
	$(PY) bench/suite.py

# A one-minute subset into bench/results/quick/ (its report.md and img/ beside the JSON).
bench-quick: $(STAMP) $(REDIS)
	$(PY) bench/suite.py --quick

bench-core: $(STAMP) $(REDIS)
	$(PY) bench/core.py

bench-state: $(STAMP) $(REDIS)
	$(PY) bench/state.py

bench-store: $(STAMP) $(REDIS)
	$(PY) bench/store.py

bench-fs: $(STAMP)
	$(PY) bench/fs.py

bench-transport: $(STAMP)
	$(PY) bench/transport.py

bench-fuse: $(STAMP)
	$(PY) bench/fuse.py

bench-elastic: $(STAMP)
	$(PY) bench/elastic.py

bench-trace: $(STAMP)
	$(PY) bench/trace.py

# Needs root: its hosts are network namespaces (docs/scaling.md#scale-out-benchmark).
bench-scaleout: $(STAMP) $(REDIS)
	$(PY) bench/scaleout.py

clean:
	rm -rf $(VENV) .uv .stratus .pytest_cache .mypy_cache .ruff_cache
