# werkhub: two commands for a newcomer, `make up` and `make test`; both bootstrap everything.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
FLOWER_VENV := .venv-flower
STATE ?= .werkhub
EXTRAS := hub,notebook,docker,k8s,dev
PYTEST_ARGS ?=
# parallel pytest workers (pytest-xdist; tests/conftest.py keeps each test file, the whole
# containers tier and each template's notebook tests on one worker, the longest first; most
# tests wait on servers, so three workers keep two cores busy; four overloaded this 2-core
# machine: servers and the container engine then answered slowly enough to fail timing-
# sensitive tests now and then); TEST_WORKERS=0: one process
TEST_WORKERS ?= 3

# folder of Alibaba's GPU cluster trace v2023 (CSV files, read in place) for bench-trace
TRACE ?= ../shared/data/alibaba-gpu-v2023

.PHONY: lock up test test-fast test-deep lint format bench bench-trace bench-serving bench-slurm bench-federation images bootstrap system-deps sandbox-deps clean labext

up: bootstrap sandbox-deps
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/werkhub up --state $(STATE)

# the 30 slowest steps are listed at the end: where the suite's time goes, run by run
test: bootstrap system-deps lint
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/python -m pytest -n $(TEST_WORKERS) --durations=30 $(PYTEST_ARGS)

# the tiers without servers (pure rules, the ledger on SQLite and PostgreSQL): about a
# minute, for the edit-test loop; make test stays the gate
test-fast: bootstrap lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "unit or booking" tests/unit tests/booking $(PYTEST_ARGS)

# the property-based tests with fresh seeds and ten times the examples (tests/support/budget.py)
test-deep: bootstrap
	HYPOTHESIS_PROFILE=deep $(BIN)/python -m pytest -q tests/unit tests/booking $(PYTEST_ARGS)

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

format: bootstrap
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: bootstrap
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/python bench/spawn.py
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/python bench/booking.py
	$(BIN)/python bench/templates.py
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/python bench/spawn_docker.py
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/python bench/jobs.py

# the booking ledger replaying a production GPU trace (docs/benchmarks.md)
bench-trace: bootstrap
	$(BIN)/python bench/trace.py $(TRACE)

# the Slurm backend against a private Slurm cluster (root; docs/slurm.md): booking to
# reservation, spawn through Slurm against bare sbatch, reconciliation of 1,000 bookings
bench-slurm: bootstrap
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/python bench/spawn_slurm.py $(BENCH_ARGS)

# model endpoints through werkhub against MLflow's bare scoring server (docs/benchmarks.md;
# about 5 minutes, 3 of them waiting for scale to zero; BENCH_ARGS=--skip-cold: under 2)
BENCH_ARGS ?=
bench-serving: bootstrap
	PATH="$(CURDIR)/node_modules/.bin:$$PATH" $(BIN)/python bench/serving.py $(BENCH_ARGS)

# federated training with the federated quality-inspection template: werkhub's deployment
# engine (root, bubblewrap) against Flower's simulation engine, SecAgg+ off and on
# (docs/benchmarks.md; about 5 minutes)
bench-federation: bootstrap
	$(BIN)/python bench/federation.py $(BENCH_ARGS)

# Curated user images, built offline from a wheelhouse on a Debian base made with
# debootstrap (how air-gapped sites build, and how machines without registry access do).
images: bootstrap system-deps
	$(BIN)/werkhub images wheelhouse .cache/images/wheelhouse --no-extra-index
	$(BIN)/werkhub images build --debootstrap --offline .cache/images/wheelhouse

# The JupyterLab extension (extensions/werkhub_lab) is committed prebuilt, so servers need no
# node; rebuild it after changing its sources (jlpm ships with JupyterLab; the builder and
# JupyterLab's packages come from the npm registry), record the sources' hash, refresh the
# copy the editable install put into the venv.
labext: bootstrap
	cd extensions/werkhub_lab && PATH="$(CURDIR)/$(BIN):$$PATH" jlpm install && \
		PATH="$(CURDIR)/$(BIN):$$PATH" jlpm build
	$(BIN)/python extensions/werkhub_lab/source_hash.py --write
	$(BIN)/python -m pip install --quiet --no-deps -e .

bootstrap: $(VENV)/.installed node_modules/.installed $(FLOWER_VENV)/.installed

$(VENV)/.installed: pyproject.toml templates/requirements.txt constraints.txt \
		extensions/werkhub_widgets/labextension/werkhub-lab/package.json
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch from the pinned CPU build first so nothing pulls a CUDA build
	$(BIN)/python -m pip install --quiet -c constraints.txt -r templates/requirements.txt
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

# Flower (federations) in its own environment: its pins clash with the hub's (requirements-flower.txt)
$(FLOWER_VENV)/.installed: requirements-flower.txt constraints-flower.txt
	test -x $(FLOWER_VENV)/bin/python || $(PYTHON) -m venv $(FLOWER_VENV)
	$(FLOWER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FLOWER_VENV)/bin/python -m pip install --quiet -c constraints-flower.txt -r requirements-flower.txt
	touch $@

# after raising a dependency on purpose (and make test passing): record both environments'
# versions as the constraints every install follows
lock: bootstrap
	{ sed -n '/^#/p' constraints.txt; $(BIN)/python -m pip freeze --exclude-editable | grep -v '^#'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	{ sed -n '/^#/p' constraints-flower.txt; $(FLOWER_VENV)/bin/python -m pip freeze --exclude-editable | grep -v '^#'; } > constraints-flower.txt.new
	mv constraints-flower.txt.new constraints-flower.txt

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# System packages for test tiers (podman, chromium, postgresql): installed when root,
# otherwise the tier is skipped and the test summary says why.
system-deps:
	scripts/system-deps.sh

# bubblewrap isolates user servers and jobs of the embedded default: installed when root;
# without it `werkhub up` says so and starts single-team (spawner.sandbox: auto)
sandbox-deps:
	scripts/system-deps.sh sandbox

clean:
	rm -rf $(VENV) $(FLOWER_VENV) node_modules .cache
