# Entry points: `make run` (set up and run everything locally), `make test` (the suite; safe on a
# shared machine), `make test-restarts` (the tests that restart the shared services).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
PYTHON ?= python3
# Local runs use development settings; production sets its own environment (.env.example).
LOCAL := DJANGO_DEBUG=$${DJANGO_DEBUG:-true}
SAMPLE ?= data/users.csv
# `make publish FILE=...`: the file to publish (default: the sample).
FILE ?= $(SAMPLE)
# Address the web server binds: loopback by default; HOST=0.0.0.0 to serve the network.
HOST ?= 127.0.0.1
export HOST
# The Procfile commands (uvicorn, celery) come from the venv.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run install services database migrate web worker reset-admin local-host-check publish \
	test test-restarts test-cluster fuzz lint format bench bench-search docs system-deps clean

# The runtime (requirements.txt, what the Docker image installs) and the tools for tests, docs
# and local runs (requirements-dev.txt includes requirements.txt).
$(VENV)/.installed: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

services:
	bash scripts/services-up.sh

database: install services
	$(LOCAL) $(PY) scripts/ensure_database.py

migrate: database
	$(LOCAL) $(PY) manage.py migrate --noinput

# With debug on (local runs), serve loopback only: refused before anything starts.
local-host-check:
	@$(LOCAL) sh scripts/loopback-when-debug.sh

# Install, migrate, start web (http://127.0.0.1:8080) and worker, publish the sample, print the
# local credentials (kept in .local/credentials); Ctrl-C stops (scripts/run-local.sh).
run: local-host-check migrate
	$(LOCAL) $(PY) manage.py collectstatic --noinput --verbosity 0
	@$(LOCAL) PY=$(PY) SAMPLE=$(SAMPLE) $(PY) scripts/foreground.py bash scripts/run-local.sh

web: local-host-check migrate
	$(LOCAL) $(VENV)/bin/honcho start -f Procfile --port $${PORT:-8080} web

worker: migrate
	$(LOCAL) $(VENV)/bin/honcho start -f Procfile --port $${PORT:-8080} worker

# Give the local admin a new random password and print it, with the local writer's token (kept
# in .local/writer_token while valid) and the URLs.
reset-admin: migrate
	@$(LOCAL) $(PY) manage.py setup_local_access --reset-password --token-file .local/writer_token

# Publish a file (FILE=path, default the sample) and wait for the workers (`make run` running).
publish: migrate
	$(LOCAL) $(PY) manage.py publish_csv $(FILE) --wait

# Debian packages the tests need: headless Chromium for the live page test, and a Compose CLI
# to validate docker-compose.yml (Debian's docker-compose, unless `docker compose` answers).
system-deps:
	@missing=; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	{ command -v docker-compose || docker compose version; } >/dev/null 2>&1 \
	  || missing="$$missing docker-compose"; \
	[ -z "$$missing" ] || { \
	  echo "installing$$missing (Debian packages)"; \
	  apt-get update -qq \
	    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }

# The suite, against real PostgreSQL, Redis and RabbitMQ (started if down); it touches only what
# it creates (its database, keys, queues, processes), so it is safe beside other runs. The tests
# make a secret key of their own (tests/support/environment.py). It runs in PYTEST_WORKERS
# processes (pytest-xdist), each with its own database, keys, queue and ports like any other run;
# each takes half the tests, in order, and one that is done early takes the other's last ones
# (worksteal: a long file at the end does not leave a process idle); PYTEST_WORKERS=0: in one.
PYTEST_WORKERS ?= 2
test: install services system-deps
	DJANGO_DEBUG=true $(PY) manage.py makemigrations --check --dry-run --no-input >/dev/null \
	  || { echo "models and migrations differ: run manage.py makemigrations"; exit 1; }
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# The tests marked `restarts_services`: they RESTART the machine's shared PostgreSQL, Redis and
# RabbitMQ (briefly, each waiting until the service answers again), so other runs on the machine
# see their connections dropped. CI runs them after `make test` (.ci/run).
test-restarts: install services
	$(PY) -m pytest --restarts -m restarts_services $(PYTEST_ARGS)

# The multi-node tests (tests marked `cluster`): a PostgreSQL primary with a streaming replica
# and a three-node RabbitMQ cluster of their own (under /tmp, loopback ports, own node names),
# started and deleted by the tests; a few minutes.
test-cluster: install services
	$(PY) -m pytest --cluster -m cluster $(PYTEST_ARGS)

# Schemathesis against the Procfile's web server on its own test database, as a writer, every
# operation of /api/schema/; fails on any answer the schema does not document
# (docs/development.md). FUZZ_MAX_EXAMPLES (per operation and phase), FUZZ_SEED.
fuzz: install services
	FUZZ_MAX_EXAMPLES=$${FUZZ_MAX_EXAMPLES:-1000} FUZZ_TIME_LIMIT=$${FUZZ_TIME_LIMIT:-1800} \
	  $(PY) -m pytest tests/users/test_schema_fuzz.py -q -s --timeout 2000

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The reference docs (docs/, mkdocs.yml) into site/; strict: a broken link or anchor fails.
docs: install
	$(VENV)/bin/mkdocs build --strict --quiet
	@echo "docs built: site/index.html"

# Benchmarks (figures printed as ratios against baselines measured in the same run).
bench: migrate
	$(LOCAL) $(PY) bench/run_all.py

# Every GET /users shape and users admin page through HTTP at 500k and 5M users (scratch
# databases, data in /tmp; ~25 min, both cores). Smaller: BENCH_SEARCH_ARGS="--sizes 50000,500000".
bench-search: install services
	$(PY) bench/bench_search.py $(BENCH_SEARCH_ARGS)

clean:
	rm -rf $(VENV) staticfiles site .pytest_cache .ruff_cache
