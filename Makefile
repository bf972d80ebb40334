# The two commands a newcomer needs: `make run` and `make test`. Both create .venv and install
# everything they need on a fresh machine (Python packages from PyPI; servers the tests use are
# installed and started by the test set-up itself).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint unit bench examples clean

$(STAMP): pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -e '.[dev,redis,cosmos,eventgrid,functions]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m hitl_core.devhost --app function_app:app

examples: $(STAMP)
	$(PY) -m examples.run_all

lint: $(STAMP)
	$(VENV)/bin/ruff check hitl_core tests bench examples workflows function_app.py
	$(VENV)/bin/mypy

unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test: $(STAMP) lint unit

bench: $(STAMP)
	$(PY) -m bench.run_all
	$(PY) -m bench.http_load
	$(PY) -m bench.storage_bench

clean:
	rm -rf $(VENV) .venv-bench .venv-infra .hitl .pytest_cache .mypy_cache .ruff_cache
