# hapair: every target installs what it needs first (scripts/bootstrap.sh is idempotent).
VENV   ?= .venv
PY     := $(VENV)/bin/python
PYTEST := $(PY) -m pytest

.PHONY: deps deb test-systemd lint unit lab e2e test demo bench bench-failover bench-mirror \
        bench-vm bench-pair bench-witness bench-resources campaign-short soak clean need-root

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
	@scripts/bootstrap.sh base vm resources
	$(PYTEST) tests/lab

e2e: need-root
	@scripts/bootstrap.sh base vm resources
	$(PYTEST) tests/e2e

# Everything: unit, lab and end-to-end (a short fault campaign included). Root-only tests
# fail (never skip) without root.
# The systemd pair boots two containers and has its own target (CI runs both).
test: need-root
	@scripts/bootstrap.sh base vm resources campaign
	$(PYTEST) tests --ignore=tests/systemd

# The package on two Debian 12 containers running systemd (a few minutes; the containers'
# root file system is built once with debootstrap and cached in /var/cache/hapair-test).
test-systemd: need-root deb
	@scripts/bootstrap.sh base systemd
	$(PYTEST) tests/systemd

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

bench: bench-failover bench-mirror bench-vm bench-pair bench-witness bench-resources

bench-failover: need-root
	@scripts/bootstrap.sh base bench
	$(PY) -m bench.failover

bench-mirror: need-root
	@scripts/bootstrap.sh base bench
	$(PY) -m bench.mirror

bench-pair: need-root
	@scripts/bootstrap.sh base bench
	$(PY) -m bench.pair

bench-witness: need-root
	@scripts/bootstrap.sh base bench
	$(PY) -m bench.witness

bench-resources: need-root
	@scripts/bootstrap.sh base resources pacemaker
	$(PY) -m bench.resources

bench-vm: need-root
	@scripts/bootstrap.sh base vm
	$(PY) -m bench.vm

# The Debian package, built with Debian's tooling (dh-virtualenv) from a copy of this tree, so
# that nothing of the build lands in the checkout or its parent: build/hapair_<version>_amd64.deb.
DEB_VERSION := $(shell dpkg-parsechangelog -l debian/changelog -S Version 2>/dev/null)
deb:
	@scripts/bootstrap.sh deb
	rm -rf build/deb && mkdir -p build/deb/src
	tar -C . --exclude=./.git --exclude=./build --exclude=./.venv --exclude='*/__pycache__' \
	  --exclude=./.pytest_cache --exclude=./.mypy_cache --exclude=./.ruff_cache -cf - . \
	  | tar -C build/deb/src -xf -
	cd build/deb/src && dpkg-buildpackage -us -uc -b --no-sign >../build.log 2>&1 \
	  || { tail -30 ../build.log; exit 1; }
	cp build/deb/hapair_$(DEB_VERSION)_amd64.deb build/
	lintian --fail-on error,warning --suppress-tags-from-file debian/lintian-notes build/hapair_$(DEB_VERSION)_amd64.deb
	@echo "make: built build/hapair_$(DEB_VERSION)_amd64.deb"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
