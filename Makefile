# dialguard: developer entry points. See README.md ("Quick start") and docs/DEVELOPING.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
SETUP_STAMP := $(VENV)/.dialguard-setup
# Extra pytest arguments, e.g. make test PYTEST_ARGS='-x -k e2e'
PYTEST_ARGS ?=

.PHONY: help setup packages up down test test-ha test-unit test-integration test-e2e demo \
        test-dates asterisk-root asterisk-cli status clean distclean

help:
	@echo "make demo         bring the stack up and place real calls through the guard"
	@echo "make test         setup, up, unit + integration + e2e tests, down; unit + integration on a shifted clock"
	@echo "make test-dates   the whole suite with the clock shifted to 2028-02-29 and 2031-07-14 (libfaketime)"
	@echo "make setup        Debian packages (when missing) and .venv"
	@echo "make up | down    start / stop the dev stack (.stack/)"
	@echo "make test-ha      Redis failover tests on a primary + 2 replicas + 3 Sentinels stack (own up/down)"
	@echo "make test-unit | test-integration | test-e2e   one suite (the last two need 'make up')"
	@echo "make status       what runs; make asterisk-cli: Asterisk console"
	@echo "make clean        down, remove .stack/ but keep the cached Asterisk root"

setup: packages $(SETUP_STAMP)

packages:
	@scripts/setup.sh packages

$(SETUP_STAMP): pyproject.toml
	@scripts/setup.sh venv
	@touch $@

up: setup
	@scripts/stack-up.sh

down:
	@scripts/stack-down.sh

test: setup
	@PYTEST_ARGS="$(PYTEST_ARGS)" scripts/run-tests.sh

test-ha: setup
	@PYTEST_ARGS="$(PYTEST_ARGS)" scripts/run-tests-ha.sh

# TEST_DATES='2029-12-31T15:59:00Z ...' picks the dates; TEST_SUITES='tests/unit' the suites.
test-dates: setup
	@PYTEST_ARGS="$(PYTEST_ARGS)" DIALGUARD_TEST_SUITES="$(TEST_SUITES)" scripts/test-dates.sh $(TEST_DATES)

test-unit: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests/unit

test-integration: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests/integration

test-e2e: setup
	$(PY) -m pytest $(PYTEST_ARGS) tests/e2e

demo: setup
	@scripts/stack-up.sh
	@$(PY) scripts/demo.py

asterisk-root:
	@scripts/asterisk-root.sh

asterisk-cli:
	@scripts/astcli.sh

status:
	@scripts/stack-status.sh

clean: down
	@find .stack -mindepth 1 -maxdepth 1 ! -name cache -exec rm -rf --one-file-system {} + 2>/dev/null || true

distclean: clean
	rm -rf --one-file-system .stack $(VENV)
