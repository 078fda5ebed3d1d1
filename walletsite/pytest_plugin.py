"""pytest plugin (pytest.ini: `-p walletsite.pytest_plugin`): with no DATABASE_URL, the
suite runs against a throwaway embedded PostgreSQL, started before Django reads its settings
and removed at the end. fsync is off there: the data is thrown away anyway, and the tests
exercise PostgreSQL's locking and constraints, which fsync does not change."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import quote

import pytest

_PGDATA: Path | None = None


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    global _PGDATA
    os.environ.setdefault("DJANGO_ENV", "test")
    # The suite logs in and registers hundreds of times from one address: rate limits are off
    # unless a run asks for them. walletsite/tests/test_throttles*.py turn them on per test.
    os.environ.setdefault("RATE_LIMITS", "off")
    # The concurrency tests run up to 100 threads over one process's pool (WEB_THREADS + 4
    # connections); on a loaded 2-core machine a thread can wait longer for a connection than
    # production's 10 s, which would answer 503 instead of testing the ledger.
    os.environ.setdefault("DATABASE_POOL_TIMEOUT_SECONDS", "120")
    # Tests never write secrets into the developer's .data/: a throwaway data dir.
    os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="wallet-test-data-"))
    if not os.environ.get("DATABASE_URL"):
        from walletsite import embedded_pg

        _PGDATA = Path(tempfile.mkdtemp(prefix="wallet-test-pg-")) / "pg"
        embedded_pg.ensure_running(_PGDATA, durable=False)
        sock = embedded_pg.socket_dir(_PGDATA)
        os.environ["DATABASE_URL"] = (
            f"postgresql://postgres@localhost:{embedded_pg.PORT}/wallet?host={quote(str(sock))}"
        )
    return (yield)


def pytest_unconfigure(config):
    if _PGDATA is not None:
        from walletsite import embedded_pg

        embedded_pg.destroy(_PGDATA)
        shutil.rmtree(_PGDATA.parent, ignore_errors=True)
