"""Backup and restore (ledger.backup and the backup_database / restore_database commands)
against the test's real PostgreSQL: a dump restores into a new database that verifies and
still enforces every rule of the ledger; what must be refused is refused and leaves nothing
behind. The proof under money traffic is wallets/tests/test_backup_traffic.py."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from ledger import backup as backup_module
from ledger.audit import audit_record
from ledger.backup import (
    LEDGER_TRIGGERS,
    BackupError,
    Server,
    backup_create,
    backup_restore,
    default_path,
    manifest_path,
    restore_verify,
)
from ledger.holds import hold_place, hold_post
from ledger.models import Account, ReconciliationRun
from ledger.posting import system_account
from ledger.tests.backups import restored_databases
from ledger.tests.test_reconciliation import funded_account

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(settings.BASE_DIR)


@pytest.fixture
def restored():
    with restored_databases() as databases:
        yield databases


def a_ledger() -> dict:
    """Money, an audit row, a pending hold and a posted one: a row for every rule to refuse."""
    account = funded_account(1000)
    funded_account(250)
    with transaction.atomic():
        audit_record(actor=None, actor_label="test", action="test.backup", target="ledger", reason="backup test")
        pending = hold_place(account_id=account.id, amount=300, reference="backup-test-pending")
        posted = hold_place(account_id=account.id, amount=200, reference="backup-test-posted")
        hold_post(hold_id=posted.id, to_account_id=system_account("bank_payouts").id, type="withdrawal")
    return {"account": account, "pending": pending.id, "posted": posted.id}


def live_figures() -> dict:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT (SELECT count(*) FROM ledger_account), (SELECT count(*) FROM ledger_transaction), "
            "(SELECT count(*) FROM ledger_entry), (SELECT coalesce(sum(balance), 0) FROM ledger_account)"
        )
        accounts, transactions, entries, total = cursor.fetchone()
    return {"accounts": accounts, "transactions": transactions, "entries": entries, "total_balance": int(total)}


def test_a_backup_restores_into_a_new_database_that_verifies(tmp_path, restored):
    # given
    a_ledger()
    figures = live_figures()
    # when
    backup = backup_create(output=tmp_path / "wallet.dump")
    name = restored.name("roundtrip")
    restore = backup_restore(path=backup.path, database=name)
    check = restore_verify(database=name, manifest=restore.manifest)
    # then
    assert check.ok, check.problems
    assert backup.manifest_path == tmp_path / "wallet.json"
    manifest = json.loads(backup.manifest_path.read_text())
    assert manifest["figures"] == figures == {**check.figures.__dict__}
    assert manifest["bytes"] == backup.bytes == backup.path.stat().st_size
    assert set(LEDGER_TRIGGERS) <= set(manifest["triggers"])
    assert check.triggers == dict.fromkeys(manifest["triggers"], True)
    assert check.pending_migrations == [] and check.unknown_migrations == []
    assert check.reconciliation.ok and check.reconciliation.checked_transactions == figures["transactions"]
    # The run is recorded in the copy it checked, not in the service's database.
    assert not ReconciliationRun.objects.exists()
    with restored.connect(name) as conn:
        assert conn.execute("SELECT count(*) FROM ledger_reconciliationrun WHERE ok").fetchone() == (1,)
    # The dump holds password and PIN hashes: only its owner may read it.
    for path in (backup.path, backup.manifest_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.partial"))


def _refused(conn: psycopg.Connection, statement: str, params=(), *, error=psycopg.errors.RestrictViolation, match=""):
    with pytest.raises(error, match=match):
        conn.execute(statement, params)
    conn.rollback()


def test_the_restored_copy_refuses_what_the_ledger_refuses(tmp_path, restored):
    # given a restored copy of a ledger with entries, an audit row and holds
    rows = a_ledger()
    name = restored.name("rules")
    backup_restore(path=backup_create(output=tmp_path / "wallet.dump").path, database=name)
    account = rows["account"].id
    with restored.connect(name) as conn:
        # when / then: the append-only triggers (pg_dump creates them after the data)
        _refused(conn, "UPDATE ledger_entry SET amount = amount + 1 WHERE account_id = %s", [account], match="append")
        _refused(conn, "DELETE FROM ledger_entry WHERE account_id = %s", [account], match="append-only")
        _refused(conn, "UPDATE ledger_auditlog SET reason = 'rewritten'", match="append-only")
        _refused(conn, "DELETE FROM ledger_auditlog", match="append-only")
        # the statement-level balance trigger
        (txn,) = conn.execute(
            "INSERT INTO ledger_transaction (id, type, note, reference) "
            "VALUES (gen_random_uuid(), 'adjustment', '', '') RETURNING id"
        ).fetchone()
        _refused(
            conn,
            "INSERT INTO ledger_entry (transaction_id, account_id, amount, balance_after, type) "
            "VALUES (%s, %s, 5, 1005, 'adjustment')",
            [txn, account],
            error=psycopg.errors.CheckViolation,
            match="does not balance",
        )
        # the hold transitions
        _refused(conn, "UPDATE ledger_hold SET status = 'released' WHERE id = %s", [rows["posted"]], match="already")
        _refused(conn, "UPDATE ledger_hold SET amount = 1 WHERE id = %s", [rows["pending"]], match="keeps its")
        _refused(conn, "DELETE FROM ledger_hold WHERE id = %s", [rows["pending"]], match="never deleted")
        # and the CHECKs
        _refused(
            conn,
            "UPDATE ledger_account SET balance = -1 WHERE id = %s",
            [account],
            error=psycopg.errors.CheckViolation,
            match='violates check constraint "customer_',
        )
        # nothing of it got through
        kept = conn.execute("SELECT balance, held_balance FROM ledger_account WHERE id = %s", [account]).fetchone()
        assert kept == (800, 300)


def test_verification_finds_a_disabled_trigger_a_missing_migration_and_drift(tmp_path, restored):
    # given a restored copy that someone changed
    a_ledger()
    name = restored.name("tampered")
    restore = backup_restore(path=backup_create(output=tmp_path / "wallet.dump").path, database=name)
    with restored.connect(name) as conn:
        conn.execute("ALTER TABLE ledger_entry DISABLE TRIGGER entry_append_only")
        conn.execute("DELETE FROM django_migrations WHERE app = 'ledger' AND name = '0006_holds'")
        conn.execute("UPDATE ledger_account SET balance = balance + 7 WHERE kind = 'customer' AND balance = 250")
    # when
    check = restore_verify(database=name, manifest=restore.manifest)
    # then
    assert not check.ok
    problems = "\n".join(check.problems)
    assert "ledger triggers missing or disabled: ledger_entry.entry_append_only" in problems
    assert "triggers missing or disabled: ledger_entry.entry_append_only" in problems
    assert "ledger.0006_holds" in check.pending_migrations and "migrations not applied" in problems
    assert "the copy holds" in problems  # total balance 7, the snapshot's 0
    assert not check.reconciliation.ok and "reconciliation run" in problems


def test_restore_refuses_an_existing_database_unless_forced_and_never_the_services_own(tmp_path, restored):
    # given a copy already restored under a name
    funded_account(1000)
    first = backup_create(output=tmp_path / "first.dump")
    name = restored.name("existing")
    backup_restore(path=first.path, database=name)
    funded_account(500)
    second = backup_create(output=tmp_path / "second.dump")
    # when / then
    with pytest.raises(BackupError, match=f"database {name} already exists.*--force"):
        backup_restore(path=second.path, database=name)
    with restored.connect(name) as conn:
        assert conn.execute("SELECT count(*) FROM ledger_transaction").fetchone() == (1,)
    with pytest.raises(BackupError, match="the database the service uses"):
        backup_restore(path=second.path, database=connection.settings_dict["NAME"], force=True)
    assert live_figures()["transactions"] == 2
    with pytest.raises(BackupError, match="not a database name"):
        backup_restore(path=second.path, database="Robert'); DROP TABLE x;--")
    # nor, even with force, one that someone is connected to
    with restored.connect(name), pytest.raises(BackupError, match="1 open connections: it is in use"):
        backup_restore(path=second.path, database=name, force=True)
    # and with force an idle copy is replaced
    replaced = backup_restore(path=second.path, database=name, force=True)
    assert replaced.replaced
    assert restore_verify(database=name, manifest=replaced.manifest).ok
    with restored.connect(name) as conn:
        assert conn.execute("SELECT count(*) FROM ledger_transaction").fetchone() == (2,)


@pytest.fixture
def dump(tmp_path) -> Path:
    a_ledger()
    return backup_create(output=tmp_path / "wallet.dump").path


def _cut(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def test_a_truncated_dump_is_refused_by_its_manifest_before_anything_is_created(dump, restored):
    # given
    _cut(dump, dump.stat().st_size - 100)
    name = restored.name("truncated")
    # when / then
    with pytest.raises(BackupError, match=r"does not match its manifest.*truncated or corrupt"):
        backup_restore(path=dump, database=name)
    assert not restored.exists(name)


def test_a_truncated_dump_without_manifest_fails_in_the_restore_and_leaves_no_database(dump, restored):
    # given a dump cut inside its data (its table of contents still reads) and copied alone
    manifest_path(dump).unlink()
    _cut(dump, dump.stat().st_size - 100)
    name = restored.name("cut")
    # when / then
    with pytest.raises(BackupError, match=r"pg_restore failed \(exit 1\): .*(end of file|could not read)") as failed:
        backup_restore(path=dump, database=name)
    # It failed while restoring (after the database was created), not in the archive's listing.
    assert "not a readable" not in str(failed.value)
    assert not restored.exists(name)


def test_a_file_that_is_no_dump_is_refused(tmp_path, dump, restored):
    # given
    garbage = tmp_path / "notes.dump"
    garbage.write_text("this is not a database dump\n")
    name = restored.name("garbage")
    # when / then
    with pytest.raises(BackupError, match="not a readable pg_dump custom-format archive"):
        backup_restore(path=garbage, database=name)
    with pytest.raises(BackupError, match="no backup file"):
        backup_restore(path=tmp_path / "missing.dump", database=name)
    _cut(dump, 2000)
    manifest_path(dump).unlink()
    with pytest.raises(BackupError, match="not a readable pg_dump custom-format archive"):
        backup_restore(path=dump, database=name)
    assert not restored.exists(name)


def test_backup_refuses_to_overwrite_a_file(tmp_path):
    # given
    existing = tmp_path / "wallet.dump"
    existing.write_text("an older backup")
    # when / then
    with pytest.raises(BackupError, match="already exists"):
        backup_create(output=existing)
    assert existing.read_text() == "an older backup"


def test_default_path_is_data_dir_backups_with_the_utc_time():
    moment = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)
    assert default_path(moment) == settings.CONFIG.data_dir / "backups" / "wallet-20260304T050607Z.dump"


def test_the_password_goes_to_pg_dump_in_the_environment_and_is_never_printed(tmp_path, monkeypatch):
    # given a database password (the test server trusts local connections, so any works)
    secret = "pw-never-on-a-command-line-7f3a"
    monkeypatch.setitem(connection.settings_dict, "PASSWORD", secret)
    calls = []
    real_run = subprocess.run

    def recording_run(args, **kwargs):
        calls.append((list(args), kwargs.get("env") or {}))
        return real_run(args, **kwargs)

    monkeypatch.setattr(backup_module.subprocess, "run", recording_run)
    out = io.StringIO()
    # when
    call_command("backup_database", "--output", str(tmp_path / "wallet.dump"), stdout=out)
    # then
    dumps = [(args, env) for args, env in calls if Path(args[0]).name == "pg_dump" and "--version" not in args]
    assert len(dumps) == 1
    env = dumps[0][1]
    assert env["PGPASSWORD"] == secret and env["PGDATABASE"] == connection.settings_dict["NAME"]
    assert all(secret not in arg for args, _ in calls for arg in args)
    assert secret not in out.getvalue()
    assert secret not in (tmp_path / "wallet.json").read_text()
    assert secret not in repr(Server.of())
    assert Server.of().url("copy").startswith(f"postgresql://{connection.settings_dict['USER']}:***@")


def test_the_commands_back_up_restore_and_report(tmp_path, restored):
    # given
    a_ledger()
    out = io.StringIO()
    # when
    call_command("backup_database", "--output", str(tmp_path / "wallet.dump"), stdout=out)
    name = restored.name("command")
    call_command("restore_database", str(tmp_path / "wallet.dump"), "--database", name, stdout=out)
    # then
    text = out.getvalue()
    assert f"backup written: {tmp_path / 'wallet.dump'} (" in text
    assert "snapshot (repeatable read, shared with pg_dump): " in text and ", 3 transactions, 6 entries, " in text
    assert f"into the new database {name} in " in text
    assert "migrations: all applied; triggers: 4 of 4 active" in text
    assert ", the same as the backup's snapshot" in text
    assert f"on {name}: OK; " in text and "0 mismatches listed" in text
    assert "use it: DATABASE_URL='postgresql://" in text
    # when the dump is restored again under the same name
    with pytest.raises(CommandError, match="already exists"):
        call_command("restore_database", str(tmp_path / "wallet.dump"), "--database", name, stdout=io.StringIO())


def test_restore_command_keeps_a_copy_that_does_not_verify_and_exits_1(tmp_path, restored, monkeypatch):
    # given a dump whose manifest promises more than the dump holds
    a_ledger()
    backup = backup_create(output=tmp_path / "wallet.dump")
    manifest = json.loads(backup.manifest_path.read_text())
    manifest["figures"]["transactions"] += 1
    backup.manifest_path.write_text(json.dumps(manifest))
    name = restored.name("unverified")
    out = io.StringIO()
    # when / then
    with pytest.raises(CommandError, match=f"the restored copy {name} does not verify; it is kept"):
        call_command("restore_database", str(backup.path), "--database", name, stdout=out)
    assert "NOT what the backup's snapshot held" in out.getvalue()
    assert "problem: the copy holds" in out.getvalue()
    assert restored.exists(name)


def test_default_backup_goes_to_data_dir_backups(restored):
    # given
    funded_account(1000)
    out = io.StringIO()
    # when
    call_command("backup_database", stdout=out)
    # then
    (line,) = [line for line in out.getvalue().splitlines() if line.startswith("backup written: ")]
    path = Path(line.removeprefix("backup written: ").split(" (")[0])
    try:
        assert path.parent == settings.CONFIG.data_dir / "backups"
        assert path.name.startswith("wallet-") and path.name.endswith("Z.dump")
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    finally:
        path.unlink()
        manifest_path(path).unlink()


def _database_url(name: str) -> str:
    db = connection.settings_dict
    return f"postgresql://{quote(db['USER'])}@localhost:{db['PORT']}/{quote(name)}?host={quote(db['HOST'])}"


def _manage(*args: str, database: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": _database_url(database), "DJANGO_ENV": "test"}
    python = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
    return subprocess.run(
        [python, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False
    )


def test_the_commands_as_real_processes_with_database_url(tmp_path, restored):
    # given
    a_ledger()
    live = connection.settings_dict["NAME"]
    name = restored.name("process")
    # when
    backed_up = _manage("backup_database", "--output", str(tmp_path / "wallet.dump"), database=live)
    restored_run = _manage("restore_database", str(tmp_path / "wallet.dump"), "--database", name, database=live)
    again = _manage("restore_database", str(tmp_path / "wallet.dump"), "--database", name, database=live)
    reconciled = _manage("reconcile", database=name)
    # then
    assert backed_up.returncode == 0, backed_up.stderr
    assert restored_run.returncode == 0, restored_run.stdout + restored_run.stderr
    assert f"on {name}: OK" in restored_run.stdout
    assert again.returncode == 1 and "already exists" in again.stderr
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert "OK; " in reconciled.stdout and "total balance 0" in reconciled.stdout
    assert Account.objects.count() == json.loads((tmp_path / "wallet.json").read_text())["figures"]["accounts"]
