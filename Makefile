# The two set-up commands of the README:
#   make demo   creates .venv, installs everything (system packages too, where apt exists and we are root), runs the demo
#   make test   the same set-up, then the whole test suite (what CI runs, via .ci/run)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := examples/node/node_modules/.mnistkit-installed
WEB_STAMP := examples/web/vendor/VERSION

.PHONY: setup system demo test bench clean

setup: system $(STAMP) $(NODE_STAMP) $(WEB_STAMP)

# Debian packages: the Fashion-MNIST data, Chromium for the browser tests, Node.js for the Node
# example. Installed only where missing, and only where apt exists and we are root.
system:
	@./scripts/install-system-deps.sh

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $(STAMP)

# The examples' npm packages, pinned by their lock files. onnxruntime-node's install script would fetch
# GPU add-ons from a host we cannot reach; ONNXRUNTIME_NODE_INSTALL=skip keeps the CPU build it ships.
$(NODE_STAMP): examples/node/package.json examples/node/package-lock.json
	@if command -v npm >/dev/null; then \
	  cd examples/node && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.mnistkit-installed; \
	else echo "note: npm not found: the Node example and its tests are skipped" >&2; fi

# onnxruntime-web's dist is ~136 MB; the page needs one script and one .wasm, copied into vendor/.
$(WEB_STAMP): examples/web/package.json examples/web/package-lock.json examples/web/copy-vendor.mjs
	@if command -v npm >/dev/null; then \
	  cd examples/web && npm ci --no-audit --no-fund --loglevel=error && node copy-vendor.mjs; \
	else echo "note: npm not found: the browser example and its tests are skipped" >&2; fi

demo: setup
	$(VENV)/bin/mnistkit demo

test: setup
	$(PY) -m pytest -q -rs --durations=25

bench: setup
	$(PY) benchmarks/train_speed.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
