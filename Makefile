# The two commands a newcomer needs: `make run` and `make test`. Both create .venv on Python 3.13
# (the version the app deploys on) and install the locked versions on a fresh machine; servers the
# tests use are installed and started by the test set-up itself.
#
# requirements.txt is the deployment lock (what Azure installs next to the app, the Functions
# worker runtime included); requirements-dev.txt adds the tools the tests use, at the same
# versions. Both are compiled from pyproject.toml by `make lock` (uv); a test fails when they drift.
PYTHON ?= $(shell tools/find-python.sh)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-py313
DEPLOY_EXTRAS := --extra functions --extra cosmos --extra redis --extra eventgrid --extra agent-framework
LOCK_FLAGS := --quiet --python-version 3.13 --python-platform x86_64-unknown-linux-gnu --custom-compile-command "make lock"
# The browser tests (tests/browser) drive Debian's chromium through Playwright (never `playwright
# install`: no browser download) and scan pages with axe-core, pinned in tests/browser/package.json.
CHROMIUM := /usr/bin/chromium
AXE := tests/browser/node_modules/axe-core/axe.min.js

.PHONY: run test lint unit browser-deps bench examples lock functions-table clean

$(STAMP): pyproject.toml requirements.txt requirements-dev.txt
	@test -n "$(PYTHON)" || tools/find-python.sh
	$(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m devhost --app function_app:app

examples: $(STAMP)
	$(PY) -m examples.run_all

lint: $(STAMP)
	$(VENV)/bin/ruff check hitl_core devhost tests bench examples workflows function_app.py
	$(VENV)/bin/mypy

unit: $(STAMP) browser-deps
	$(PY) -m pytest -q -p no:cacheprovider

test: $(STAMP) browser-deps lint unit

# Quick when both are there: make only checks that the two files exist (and that the npm lock is
# not newer than the install).
browser-deps: $(CHROMIUM) $(AXE)

$(CHROMIUM):
	@test "$$(id -u)" = 0 || { echo "Debian's chromium is missing and we are not root: run" \
		"\`sudo apt-get update && sudo apt-get install -y --no-install-recommends chromium\`, then make test again" >&2; exit 1; }
	DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=300 chromium \
		|| { echo "apt-get could not install chromium (see above); install it by hand, then make test again" >&2; exit 1; }
	@test -x $(CHROMIUM) || { echo "apt-get installed chromium but $(CHROMIUM) is missing" >&2; exit 1; }

$(AXE): tests/browser/package.json tests/browser/package-lock.json
	@command -v npm >/dev/null || { echo "npm is needed for axe-core: apt-get install nodejs npm" >&2; exit 1; }
	npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
	touch $@

lock: $(STAMP)
	$(VENV)/bin/uv pip compile pyproject.toml $(DEPLOY_EXTRAS) $(LOCK_FLAGS) -o requirements.txt
	$(VENV)/bin/uv pip compile pyproject.toml --all-extras -c requirements.txt $(LOCK_FLAGS) -o requirements-dev.txt

functions-table: $(STAMP)
	$(PY) -m devhost.worker table --write

bench: $(STAMP)
	$(PY) -m bench.run_all
	$(PY) -m bench.http_load
	$(PY) -m bench.storage_bench
	$(PY) -m bench.app_cost
	$(PY) -m bench.vote_bench
	$(PY) -m bench.app_pages
	$(PY) -m bench.af_hosting

clean:
	rm -rf $(VENV) .venv-bench .venv-infra .hitl .pytest_cache .mypy_cache .ruff_cache
