# Set-up and the two jobs the README names. Everything installs into .venv from pyproject.toml.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	@echo "==> 1/3 creating $(VENV) with $(PY)"
	$(PY) -m venv $(VENV)
	@echo "==> 2/3 upgrading pip"
	$(BIN)/pip install -q --upgrade pip
	@echo "==> 3/3 installing zaya-edge with the export and dev extras (torch, transformers, onnx: a few minutes)"
	$(BIN)/pip install -e '.[export,dev]'
	touch $@
	@echo "==> installed: . $(VENV)/bin/activate puts zaya-edge on PATH"

install: $(BIN)/.installed

demo: $(BIN)/.installed  ## the main job end to end
	$(BIN)/python examples/demo.py

test: $(BIN)/.installed custom-ops-all
	$(BIN)/python -m pytest

.PHONY: install demo test

# ---- native kernels of the ai.zaya ops (custom_ops/README.md) --------------------------------
# ORT_INCLUDE_DIR: the onnxruntime C/C++ API headers; fetched there (no install) when missing.
ORT_INCLUDE_DIR ?= $(CURDIR)/custom_ops/build/ort-include
CMAKE ?= cmake
custom_ops_build = $(CMAKE) -S custom_ops -B custom_ops/$(1) --log-level=WARNING -DORT_INCLUDE_DIR="$(ORT_INCLUDE_DIR)" $(2) \
	&& $(CMAKE) --build custom_ops/$(1) -j 2

ort-headers:
	@test -f "$(ORT_INCLUDE_DIR)/onnxruntime_c_api.h" || custom_ops/fetch_ort_headers.sh "$(ORT_INCLUDE_DIR)" >/dev/null

custom-ops: ort-headers  ## libzaya_custom_ops with the CPU kernels (custom_ops/build)
	$(call custom_ops_build,build,)

custom-ops-cuda: ort-headers  ## + the CUDA execution provider kernels (custom_ops/build-cuda; nvcc)
	$(call custom_ops_build,build-cuda,-DZAYA_CUDA=ON)

custom-ops-hip: ort-headers  ## + the ROCm execution provider kernels (custom_ops/build-hip; hipcc)
	$(call custom_ops_build,build-hip,-DZAYA_HIP=ON)

# what `make test` builds: the CPU library always, GPU kernels where their compiler is installed
custom-ops-all: custom-ops $(if $(shell command -v nvcc),custom-ops-cuda) $(if $(shell command -v hipcc),custom-ops-hip)
	@command -v nvcc >/dev/null || echo "custom ops: nvcc not found, CUDA kernels not compiled"
	@command -v hipcc >/dev/null || echo "custom ops: hipcc not found, HIP kernels not compiled (apt-get install hipcc)"

.PHONY: ort-headers custom-ops custom-ops-cuda custom-ops-hip custom-ops-all
