# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv when absent.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-test

.PHONY: demo test install lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-install when pyproject.toml changes.
# box2d-py (gymnasium[box2d], CarRacing in the tests) builds from source with swig, which its
# isolated build cannot see: build it first in the venv, with the venv's swig on PATH.
$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/pip install -q swig setuptools wheel
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/pip install -q --no-build-isolation box2d-py==2.3.5
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/rlviz video --checkpoint agents/checkpoints/boxreach.safetensors --episodes 1 --out videos/demo --overwrite

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check rlviz envs agents tests benchmarks examples

bench: $(STAMP)
	$(BIN)/python benchmarks/env_throughput.py

clean:
	rm -rf $(VENV) .pytest_cache
