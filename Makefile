# The README quickstart: `make run` (the main job), `make test` (the fast tests) and `make test-all`
# (every test); `make docs` builds the documentation site. Each sets itself up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-all docs install clean

install: $(STAMP)

# constraints.txt pins torch to the CPU wheel, so a fresh machine never pulls a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,airflow,eval,tune,kubernetes,auth]"
	touch $(STAMP)

# The main job: the offline GPT-2 vs GPT-3 compare (2 seeds) and its plots, as the `pipeline`
# MLflow Project entry point, logged to ./mlflow.db. `mlflow run` starts `mlproject` from PATH.
run: $(STAMP)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow run . -e pipeline --env-manager local \
		--experiment-name gpt2_vs_gpt3_offline

# The fast tier: every test but the end-to-end ones (marker e2e: containers, Airflow, PostgreSQL,
# tracking servers, whole pipelines or several processes, mlflow run); --dist loadfile keeps a
# module's tests (and its module-scoped fixtures: a trained run, a prepared corpus) on one worker.
# Two workers per core: a test spends a good part of its time waiting (SQLite commits, CLI
# subprocesses starting), and a second worker fills it (6m07 vs 7m14 with one per core, here).
# PYTHONDONTWRITEBYTECODE= lets Python and pytest cache compiled and assertion-rewritten modules
# (collecting took 25 s per worker without them, 16 s with them).
CORES := $(shell nproc 2>/dev/null || echo 2)
TEST_WORKERS ?= $(shell echo $$(( 2 * $(CORES) )))
PYTEST := PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest

test: $(STAMP)
	$(PYTEST) -m "not e2e" -n $(TEST_WORKERS) --dist loadfile --durations=10

# Every test: all but the serial ones one worker per core (the fast tier and the end-to-end tests
# that run processes of their own, whose timeouts want a core each), then the serial ones one at
# a time (they start servers and containers, each on free ports, or measure speed). What CI runs.
# The serial phase runs even when the first fails, so one failure hides no other; either fails it.
test-all: $(STAMP)
	$(PYTEST) -m "not serial" -n $(CORES) --dist loadfile --durations=20; first=$$?; \
	$(PYTEST) -m serial --durations=10 || exit $$?; exit $$first

# The documentation site (mkdocs.yml, pages under docs/) into site/; --strict fails on a broken
# link or a page missing from the nav, as CI does.
DOCS_STAMP := $(VENV)/.installed-docs

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .pytest_cache site

# ----------------------------------------------------------------------------- containers
# The step image that the Airflow DAG runs (docker/Dockerfile), built offline from a local
# base image and a wheelhouse, as an air-gapped cluster needs. `bash docker/setup_engine.sh`
# does all of it (engine, base image, wheelhouse, image) and skips what is up to date.
IMAGE      ?= mlproject-step:latest
BASE_IMAGE ?= mlproject-base:bookworm
WHEELHOUSE ?= wheelhouse
EXTRAS     ?=
space      := $() $()
WHEEL_STAMP = $(WHEELHOUSE)/.complete$(if $(strip $(EXTRAS)),-$(subst $(space),-,$(strip $(EXTRAS))))

.PHONY: engine base-image wheelhouse image

engine:
	bash docker/setup_engine.sh engine

base-image:
	bash docker/setup_engine.sh base

# torch pinned by constraints.txt (the CPU wheel) plus every dependency of the package (and
# of EXTRAS, e.g. `make wheelhouse EXTRAS=airflow` for the compose images), as wheels for
# this Python (the bookworm base image has Python 3.11 too).
wheelhouse: $(WHEEL_STAMP)

$(WHEEL_STAMP): pyproject.toml constraints.txt
	$(PYTHON) docker/requirements.py pyproject.toml $(EXTRAS) > $(WHEELHOUSE).requirements.txt
	$(PYTHON) -m pip download -q --only-binary=:all: -d $(WHEELHOUSE) -c constraints.txt \
		-r $(WHEELHOUSE).requirements.txt "setuptools>=68" wheel
	rm -f $(WHEELHOUSE).requirements.txt
	touch $@

image:
	IMAGE=$(IMAGE) BASE_IMAGE=$(BASE_IMAGE) EXTRAS="$(EXTRAS)" bash docker/build_image.sh
