"""Helpers for the backup tests: databases restored on the test server, and their removal."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from ledger.backup import Server, database_drop


class RestoredDatabases:
    """Names for restored copies on the test's PostgreSQL server; `drop_all` removes them."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.server = Server.of()

    def name(self, label: str) -> str:
        name = f"restored_{label}_{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        return name

    def connect(self, name: str) -> psycopg.Connection:
        return self.server.connect(name)

    def exists(self, name: str) -> bool:
        with self.server.connect("postgres", autocommit=True) as admin:
            return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None

    def drop_all(self) -> None:
        for name in self.names:
            database_drop(self.server, name)


@contextmanager
def restored_databases() -> Iterator[RestoredDatabases]:
    databases = RestoredDatabases()
    try:
        yield databases
    finally:
        databases.drop_all()
