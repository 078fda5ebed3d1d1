# Two commands: `make run` serves, `make test` tests. Both build .venv first from the
# machine's python3 and the pinned requirements; nothing else needs installing by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint format reconcile recompute shell clean

$(VENV)/.deps: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev-deps: $(VENV)/.deps requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: $(VENV)/.deps
	$(PY) -m walletsite.serve

test: $(VENV)/.dev-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.dev-deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

reconcile: $(VENV)/.deps
	$(PY) manage.py reconcile

recompute: $(VENV)/.deps
	$(PY) manage.py recompute_balances

shell: $(VENV)/.deps
	$(PY) manage.py shell

clean:
	rm -rf $(VENV)
