# hapair: every target installs what it needs first (scripts/bootstrap.sh is idempotent).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: deps lint unit lab e2e test demo bench bench-failover bench-mirror bench-vm bench-pair \
        campaign-short soak clean need-root

deps:
	@scripts/bootstrap.sh base

need-root:
	@if [ "$$(id -u)" != 0 ]; then \
	  echo "make: this target needs root: the lab builds network namespaces (sudo make $(MAKECMDGOALS))" >&2; \
	  exit 1; fi

lint: deps
	$(VENV)/bin/ruff check takeover mirrord tests bench
	$(VENV)/bin/ruff format --check takeover mirrord tests bench
	$(VENV)/bin/mypy

unit: deps
	$(PYTEST) tests/unit

# The lab's own tests and effects (root), and the end-to-end tests (root).
lab: need-root
	@scripts/bootstrap.sh base vm
	$(PYTEST) tests/lab

e2e: need-root
	@scripts/bootstrap.sh base vm
	$(PYTEST) tests/e2e

# Everything: unit, lab and end-to-end (a short fault campaign included). Root-only tests fail
# (never skip) without root.
test: need-root
	@scripts/bootstrap.sh base vm campaign
	$(PYTEST) tests

# The fault campaign (tests/campaign): SEED defaults to a random one (printed), MINUTES to 3/30.
SEED ?=
SEED_ARG = $(if $(SEED),--seed $(SEED),)

campaign-short: need-root
	@scripts/bootstrap.sh base campaign
	$(PY) -m tests.campaign $(SEED_ARG) --minutes $(or $(MINUTES),3)

soak: need-root
	@scripts/bootstrap.sh base campaign
	$(PY) -m tests.campaign $(SEED_ARG) --minutes $(or $(MINUTES),30)

demo: need-root deps
	$(PY) -m tests.lab.demo

bench: bench-failover bench-mirror bench-vm bench-pair

bench-failover: need-root
	@scripts/bootstrap.sh base bench
	$(PY) -m bench.failover

bench-mirror: need-root
	@scripts/bootstrap.sh base bench
	$(PY) -m bench.mirror

bench-pair: need-root
	@scripts/bootstrap.sh base bench
	$(PY) -m bench.pair

bench-vm: need-root
	@scripts/bootstrap.sh base vm
	$(PY) -m bench.vm

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
