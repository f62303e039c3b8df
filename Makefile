# dlunits: `make test` and `make bench` work on a fresh machine: each creates
# .venv if it is missing, installs the pinned dependencies, builds the extension
# (CPU kernels always; CUDA kernels where nvcc and a CUDA build of torch exist,
# or as DLUNITS_CUDA=1/0 says) and runs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CUDA_HOME ?= $(firstword $(wildcard /usr/local/cuda /usr/local/cuda-13.0))
export CUDA_HOME
# Ampere and Hopper: enough for the lent GPUs, short enough for CI.
TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
export TORCH_CUDA_ARCH_LIST
MAX_JOBS ?= 2
export MAX_JOBS

SOURCES := setup.py $(wildcard csrc/*.h csrc/*.cpp csrc/cpu/*.h csrc/cpu/*.cpp csrc/cuda/*.cu csrc/cuda/*.cuh csrc/cuda/*.h)

.PHONY: all build test bench gpu-check clean

all: test

$(VENV)/.deps: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

# The first build, and any after pyproject.toml changes, is pip's editable
# install (dlunits/_C*.so in place, the dlunits-bench script on the venv's PATH);
# after a source change, ninja rebuilds in place only what changed.
$(VENV)/.built: $(VENV)/.deps pyproject.toml $(SOURCES)
	if [ $(VENV)/.installed -nt pyproject.toml ] && [ $(VENV)/.installed -nt $(VENV)/.deps ]; then \
		$(PY) setup.py -q build_ext --inplace; \
	else \
		$(PY) -m pip install -q --no-build-isolation --no-deps -e . && touch $(VENV)/.installed; \
	fi
	touch $@

build: $(VENV)/.built

test: build
	$(PY) -m pytest -q tests

bench: build
	$(PY) -m dlunits.bench --suite configs/bench/quick.yaml --device all

# On a GPU machine, against the torch that is there: build, CUDA tests, benchmark.
gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf build dlunits/_C*.so $(VENV)/.built $(VENV)/.installed
