# The README quickstart: `make run` (the main job) and `make test` (the suite). Both set themselves up.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test install clean

install: $(STAMP)

# constraints.txt pins torch to the CPU wheel, so a fresh machine never pulls a CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev,airflow]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mlproject summary

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
