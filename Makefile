# The two commands of the quick start. Each works on a fresh machine by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0
# where pip looks for torch: empty, the package index pip is configured with (PyPI's default Linux build of torch
# includes CUDA, several GB); https://download.pytorch.org/whl/cpu for the CPU build, .../whl/cu126 for a GPU build
TORCH_INDEX ?=
DEMO_OUT ?= runs/demo
# processes the test suite runs in (pytest-xdist): auto = one per core; 0 = in pytest's own process
TEST_JOBS ?= auto

.PHONY: demo test install install-test clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e '.[tensorboard]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

DEMO_FLAGS ?= --preset quick --steps 450

demo: $(VENV)/.installed
	$(VENV)/bin/assocgan run --benchmark restore4 --methods tl,jl,single,assoc --seed 0 --out $(DEMO_OUT) $(DEMO_FLAGS)

test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(PY) -m pytest -q -n $(TEST_JOBS)

clean:
	rm -rf runs .pytest_cache
