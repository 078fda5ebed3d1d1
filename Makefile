# Two commands: `make run` serves, `make test` tests. Both build .venv first from the
# machine's python3 and the pinned requirements; nothing else needs installing by hand.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run stop worker venv test lint format check-compose ci bench chaos reconcile recompute backup restore shell clean

$(VENV)/.deps: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.dev-deps: $(VENV)/.deps requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

# PostgreSQL (embedded, unless DATABASE_URL), migrations, gunicorn and the worker; Ctrl-C
# stops them in order.
run: $(VENV)/.deps
	$(PY) -m walletsite.serve

# From another terminal: what Ctrl-C does (SIGTERM to the `make run` supervisor, then wait).
stop: $(VENV)/.deps
	$(PY) -m walletsite.serve stop

# The background worker alone (outbox delivery, periodic jobs), e.g. beside a DATABASE_URL.
worker: $(VENV)/.deps
	$(PY) manage.py run_worker

# The venv with the test and lint tools, and nothing else.
venv: $(VENV)/.dev-deps

test: $(VENV)/.dev-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check-compose: $(VENV)/.deps
	$(PY) .ci/check_compose.py

# What CI runs, on this checkout.
ci:
	bash .ci/run

# The benchmark beside the textbook baseline (README "Benchmark"): about 30 minutes, results
# in docs/bench/. BENCH_SMOKE=1 is the 1-2 minute size CI runs. Needs wrk: Debian's package
# is installed here when missing (with sudo unless root).
bench: $(VENV)/.deps
	@command -v wrk >/dev/null || { \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	  echo "make bench: installing Debian's wrk package"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq wrk >/dev/null; \
	} || { echo "make bench needs wrk: install Debian's wrk package (apt-get install wrk)" >&2; exit 1; }
	$(PY) -m bench.run

# The chaos suite (README "Chaos"): random money traffic while gunicorn, the worker and
# PostgreSQL are killed and restarted, then proof from the database that nothing was lost or
# moved twice; exit 1 on any violation. The knobs are make variables or environment variables:
# make chaos CHAOS_OPS=1500 CHAOS_CRASHES=8 CHAOS_PG_RESTARTS=2 (all of them in chaos/run.py).
chaos: $(VENV)/.deps
	$(PY) -m chaos.run

format: $(VENV)/.dev-deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

reconcile: $(VENV)/.deps
	$(PY) manage.py reconcile

recompute: $(VENV)/.deps
	$(PY) manage.py recompute_balances

# A pg_dump of the database (embedded or DATABASE_URL) in one snapshot, while the service
# runs: DATA_DIR/backups/wallet-<UTC time>.dump and its manifest, or OUTPUT=path.
backup: $(VENV)/.deps
	$(PY) manage.py backup_database $(if $(OUTPUT),--output "$(OUTPUT)")

# FILE=path [DATABASE=name] [FORCE=1]: restore into a new database on the same server, then
# check its migrations and triggers and reconcile it.
restore: $(VENV)/.deps
	@test -n "$(FILE)" || { echo "usage: make restore FILE=path/to/wallet-....dump [DATABASE=name] [FORCE=1]" >&2; exit 2; }
	$(PY) manage.py restore_database "$(FILE)" $(if $(DATABASE),--database "$(DATABASE)") $(if $(FORCE),--force)

shell: $(VENV)/.deps
	$(PY) manage.py shell

clean:
	rm -rf $(VENV)
