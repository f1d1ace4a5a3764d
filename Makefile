# Set-up and the two jobs the README names. Everything installs into .venv from pyproject.toml.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[export,dev]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed  ## the main job end to end
	$(BIN)/python examples/demo.py

test: $(BIN)/.installed
	$(BIN)/python -m pytest

.PHONY: install demo test
