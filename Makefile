# The two set-up commands of the README:
#   make demo   creates .venv, installs everything (system packages too, where apt exists and we are root), runs the demo
#   make test   the same set-up, then the whole test suite (what CI runs, via .ci/run)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup system demo test bench clean

setup: system $(STAMP)

# Debian packages: the Fashion-MNIST data, Chromium for the browser tests, Node.js for the Node
# example. Installed only where missing, and only where apt exists and we are root.
system:
	@./scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

demo: setup
	$(VENV)/bin/mnistkit demo

test: setup
	$(PY) -m pytest -q -rs

bench: setup
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
