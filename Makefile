# Quick start: `make run` starts the whole service, `make test` runs every check. See README.md.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
PIP := $(VENV)/bin/pip install --disable-pip-version-check -q
# One stamp per requirements file: `make run` installs what running needs, `make test` adds the checks.
RUN_STAMP := $(VENV)/.installed-run
DEV_STAMP := $(VENV)/.installed-dev
TOOLS := buildah skopeo docker-registry umoci busybox-static slirp4netns nftables
# Browser tests (tests/browser): Debian's Chromium and its driver; nothing is downloaded at test time.
TEST_TOOLS := chromium chromium-driver

.PHONY: run test tools test-tools services lint check pytest bench clean

$(PY):
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || .ci/debian-packages python3-venv
	$(PYTHON) -m venv $(VENV)

$(RUN_STAMP): requirements.txt | $(PY)
	$(PIP) -r requirements.txt
	@touch $(RUN_STAMP)

$(DEV_STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PIP) -r requirements-dev.txt
	@touch $(RUN_STAMP) $(DEV_STAMP)

tools:
	@.ci/debian-packages $(TOOLS) git ca-certificates

test-tools:
	@.ci/debian-packages $(TEST_TOOLS)

services:
	@.ci/services

run: tools $(RUN_STAMP)
	$(PY) manage.py run

lint: $(DEV_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Types, migrations and OpenAPI checks need no database server: they run on a throwaway embedded data dir.
check: $(DEV_STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  env -u DATABASE_URL -u REDIS_URL WAVE_DATA_DIR=$$tmp $(VENV)/bin/mypy && \
	  env -u DATABASE_URL -u REDIS_URL WAVE_DATA_DIR=$$tmp $(PY) manage.py makemigrations --check --dry-run && \
	  env -u DATABASE_URL -u REDIS_URL WAVE_DATA_DIR=$$tmp $(PY) manage.py spectacular --validate --fail-on-warn --file $$tmp/openapi.yaml && \
	  echo "OpenAPI schema valid"

# Two processes (the suite waits on servers, workers and buildah more than it computes); a test module stays in
# one process, so that its fixtures (registries, workers) are started once.
PYTEST_WORKERS ?= 2
pytest: $(DEV_STAMP)
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile

test: tools test-tools services lint check pytest

bench: tools services $(DEV_STAMP)
	@.ci/debian-packages wrk
	$(PY) -m bench $(BENCH)

clean:
	rm -rf $(VENV) .wave .pytest_cache .ruff_cache .mypy_cache .hypothesis
