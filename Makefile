# provenroute — one-command set-up, tests and demo. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV     ?= .venv
PY       := $(VENV)/bin/python
PYTEST_ARGS ?=
export PYTHONUNBUFFERED := 1
# Every target here runs the local development stack (placeholder secrets allowed).
export PROVENROUTE_ENV ?= dev

.PHONY: help install services-up services-down services-status test test-unit lint demo image clean-state

help: ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	@python3 -c 'import ensurepip, venv' 2>/dev/null || bash scripts/services.sh install
	@test -x $(VENV)/bin/pip || { rm -rf $(VENV); python3 -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## create .venv and install provenroute with dev extras

services-up: install ## start Kafka, PostgreSQL and Docker (installs what is missing)
	bash scripts/services.sh up

services-down: ## stop the services services-up started (data is kept)
	bash scripts/services.sh down

services-status: install ## show whether each service answers
	$(PY) -m api.cli services status

include mk/image.mk

test-unit: install ## pure unit tests only (no services)
	$(PY) -m pytest tests/unit -q $(PYTEST_ARGS)

test: services-up ## install, start the services, build the job image, run the whole suite
	$(MAKE) --no-print-directory image
	$(PY) -m pytest tests -q -p no:cacheprovider $(PYTEST_ARGS)

lint: install ## ruff, mypy and the package layers (import-linter)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy contracts infra simulator streams projections api datasets container
	PYTHONPATH=$(CURDIR) $(VENV)/bin/lint-imports

demo: services-up ## set up everything and run the main job end to end
	$(MAKE) --no-print-directory image
	$(PY) -m api.cli demo

clean-state: services-down ## stop services and delete all local state (.state/)
	@if [ -L .state/postgres ]; then rm -rf "$$(readlink .state/postgres)"; fi
	rm -rf .state
