# Quick start: `make run` starts the whole service, `make test` runs every check. See README.md.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTHON ?= python3
TOOLS := buildah skopeo docker-registry umoci busybox-static

.PHONY: run test tools services lint check pytest bench clean

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || .ci/debian-packages python3-venv
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt
	@touch $(STAMP)

tools:
	@.ci/debian-packages $(TOOLS) git ca-certificates

services:
	@.ci/services

run: tools $(STAMP)
	$(PY) manage.py run

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Types, migrations and OpenAPI checks need no database server: they run on a throwaway embedded data dir.
check: $(STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  env -u DATABASE_URL -u REDIS_URL WAVE_DATA_DIR=$$tmp $(VENV)/bin/mypy && \
	  env -u DATABASE_URL -u REDIS_URL WAVE_DATA_DIR=$$tmp $(PY) manage.py makemigrations --check --dry-run && \
	  env -u DATABASE_URL -u REDIS_URL WAVE_DATA_DIR=$$tmp $(PY) manage.py spectacular --validate --fail-on-warn --file $$tmp/openapi.yaml && \
	  echo "OpenAPI schema valid"

pytest: $(STAMP)
	$(VENV)/bin/pytest

test: tools services lint check pytest

bench: tools services $(STAMP)
	@.ci/debian-packages wrk
	$(PY) -m bench $(BENCH)

clean:
	rm -rf $(VENV) .wave .pytest_cache .ruff_cache .mypy_cache .hypothesis
