# Quick start: `make demo`, `make test`. Both set everything up on first run.
SHELL := /bin/bash
.DEFAULT_GOAL := demo

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum < pyproject.toml | cut -d' ' -f1)

# The first Python >= 3.12 found: python3.13, python3.12, python3 (pyenv's .python-version
# selects 3.12 on images whose python3 is older), then pyenv's own installs.
PYTHON ?= $(shell for p in python3.13 python3.12 python3 $$HOME/.pyenv/versions/3.1[2-9]*/bin/python3; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null; \
	then command -v $$p; break; fi; done)

.PHONY: demo test docs docs-img lint bench bench-console chromium clean autobahn

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON)" ]; then \
		echo "error: mitm_wsroute needs Python >= 3.12 (mitmproxy 12 does); none found as python3.13," \
		     "python3.12 or python3. Install one, or run: make PYTHON=/path/to/python3.12 test" >&2; \
		exit 1; fi
	@echo "== setting up $(VENV) with $(PYTHON) ($$($(PYTHON) --version))"
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-*; touch $@

# Debian's Chromium for the browser tests (Playwright's own browser download is not used), and
# an emoji font, so that mitmweb's flow markers show in the screenshots the tests save.
chromium:
	@{ command -v chromium && dpkg -s fonts-noto-color-emoji; } >/dev/null 2>&1 || { \
		echo "== installing Debian's chromium and fonts-noto-color-emoji"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			chromium fonts-noto-color-emoji >/dev/null; }

# Node's `ws` for the Node client example (pinned in examples/node/package-lock.json).
NODE_DEPS := examples/node/node_modules/.package-lock.json
$(NODE_DEPS): examples/node/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: the Node example needs node and npm" >&2; exit 1; }
	cd examples/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# Real Socket.IO and GraphQL clients from npm for the tests (socket.io-client, graphql-ws,
# subscriptions-transport-ws; pinned in tests/node/package-lock.json).
TEST_NODE_DEPS := tests/node/node_modules/.package-lock.json
$(TEST_NODE_DEPS): tests/node/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "error: the Node client tests need node and npm" >&2; exit 1; }
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo: $(STAMP)
	$(PY) examples/demo.py

# The user guide (docs/, mkdocs.yml) as a site in test-artifacts/site/. --strict: a warning (a
# broken link or anchor, a page missing from the nav) fails the build. The examples on its pages
# run in tests/test_docs.py.
DOCS_BUILD := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
docs: $(STAMP)
	$(DOCS_BUILD)

# The live console's screenshots in docs/img/, taken again (a test run writes them to
# test-artifacts/ and leaves docs/img/ as it is).
docs-img: $(STAMP) chromium
	WSROUTE_DOCS_IMG=1 $(PY) -m pytest tests/test_browser_console.py

# The end-to-end tests run twice: as configured by default, and with mitmproxy's per-message
# hooks off, where the layer reads and writes routed sockets itself. Two pytest workers
# (pytest-xdist), each taking whole modules (their module-scoped proxies stay one per module):
# most of a test's time is spent waiting on its processes and sockets, so two workers take
# less than half the time of one on a 2-CPU machine. `make test PYTEST_WORKERS=0` runs it in
# one process.
PYTEST_WORKERS ?= 2
PYTEST := $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadscope
test: $(STAMP) chromium $(NODE_DEPS) $(TEST_NODE_DEPS)
	$(DOCS_BUILD)
	$(PYTEST)
	WSROUTE_TEST_MESSAGE_HOOKS=false $(PYTEST) tests/test_e2e_*.py tests/test_browser*.py

# Routed sockets against plain mitmdump, in one run (several minutes; `BENCH_ARGS=--quick` for less).
# Mockttp, the peer the bench measures against (pinned in bench/mockttp/package-lock.json).
BENCH_DEPS := bench/mockttp/node_modules/.package-lock.json
$(BENCH_DEPS): bench/mockttp/package-lock.json
	cd bench/mockttp && npm install --no-audit --no-fund --loglevel=error  # npm ci trips on an optional peer
	@touch $@

bench: $(STAMP) $(BENCH_DEPS)
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/console.py $(BENCH_CONSOLE_ARGS)

# The live console's cost alone: a watched socket against an unwatched one (under a minute).
bench-console: $(STAMP)
	$(PY) bench/console.py $(BENCH_CONSOLE_ARGS)

# Autobahn|Testsuite through mitmdump, plain and with the addon (bench/autobahn/run.py). Slow:
# 10 to 30 minutes for each of its 11 modes on 2 CPUs, most of it in the compression cases;
# `make autobahn AUTOBAHN_ARGS="--mode client-mock --exclude 12.*,13.*"` runs one mode in about
# two. wstest runs on Python 2.7 only (python2.7, else pyenv's); its virtualenv is made by
# virtualenv 20.21, the last to create 2.7 environments, run from the project's Python.
PYTHON2 ?= $(shell for p in python2.7 $$HOME/.pyenv/versions/2.7*/bin/python; do \
	if command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))' 2>/dev/null; \
	then command -v $$p; break; fi; done)
AB_VENV := .venv-autobahn
AB_STAMP := $(AB_VENV)/.installed-$(shell cat bench/autobahn/requirements.txt bench/autobahn/virtualenv.txt | cksum | cut -d' ' -f1)

$(AB_STAMP): bench/autobahn/requirements.txt bench/autobahn/virtualenv.txt | $(STAMP)
	@if [ -z "$(PYTHON2)" ]; then \
		echo "error: Autobahn|Testsuite needs Python 2.7; none found as python2.7 or in" \
		     "~/.pyenv/versions/2.7*. Install one (pyenv install 2.7.18), or run:" \
		     "make PYTHON2=/path/to/python2.7 autobahn" >&2; \
		exit 1; fi
	@echo "== setting up $(AB_VENV) with $(PYTHON2)"
	rm -rf $(AB_VENV)
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(PY) -m pip install -q --target "$$tmp" -r bench/autobahn/virtualenv.txt && \
	PYTHONPATH="$$tmp" $(PY) -m virtualenv -q --no-periodic-update -p $(PYTHON2) $(AB_VENV)
	$(AB_VENV)/bin/python -m pip install -q -r bench/autobahn/requirements.txt
	@touch $@

autobahn: $(STAMP) $(AB_STAMP)
	$(PY) bench/autobahn/run.py $(AUTOBAHN_ARGS)

lint: $(STAMP)
	@echo "== ruff, ruff format, mypy --strict"
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict mitm_wsroute
	$(VENV)/bin/mypy --strict bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis examples/node/node_modules tests/node/node_modules bench/mockttp/node_modules
