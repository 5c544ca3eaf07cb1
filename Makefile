# The two commands of the quick start. Each works on a fresh machine by itself.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH := torch==2.13.0

.PHONY: demo test install install-test clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[tensorboard]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

DEMO_FLAGS ?= --preset quick --steps 450

demo: $(VENV)/.installed
	$(VENV)/bin/assocgan run --benchmark restore4 --methods tl,jl,single,assoc --seed 0 --out runs/demo $(DEMO_FLAGS)

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

clean:
	rm -rf runs .pytest_cache
