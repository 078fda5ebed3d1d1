"""Backup under money traffic: threads with their own connections send transfers, merchant
payments (with a fee and cashback) and top-ups (add-money, then the gateway's signed webhook)
through the API while `backup_create` runs; the dump restores into a fresh database that
reconciles (in process, as restore_database does, and as `manage.py reconcile` with the
copy's DATABASE_URL), and the copy is a consistent prefix of the live ledger.

To make "while" exact instead of likely, a test-only table is held under ACCESS EXCLUSIVE
while the backup starts: pg_dump imports the backup's snapshot, then waits for its table
locks, and the traffic goes on. Every request sent after pg_dump was seen waiting commits
after the snapshot, so the copy must hold none of it; every request answered before the
backup started must be in the copy, whole."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from ledger.backup import APPLICATION_NAME, Server, backup_create, backup_restore, restore_verify
from ledger.tests.backups import restored_databases
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import IdempotencyKey, PaymentAttempt
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import fund, transfer
from wallets.tests.test_gateway_webhook import deliver
from wallets.tests.test_payments import campaign, fund_pool, merchant, pay
from wallets.tests.test_topups import add_money

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(settings.BASE_DIR)
WORKERS = 4
CUSTOMERS = 6
# Requests answered before the backup starts, and sent while pg_dump waits.
BEFORE = 24
DURING = 12
WAIT_SECONDS = 120
KEYS_SQL = "SELECT user_id, key, response_status, response_body FROM wallets_idempotencykey"


@dataclass
class Op:
    kind: str
    user_id: object
    key: str
    status: int
    started_after_snapshot: bool
    transaction_ids: list[str] = field(default_factory=list)
    payment_attempt_id: str | None = None


class Traffic:
    """Worker threads moving money until stopped; every answered request is an Op."""

    def __init__(self, customers, shop) -> None:
        self.customers = customers  # [(user, wallet, auth)]
        self.shop = shop
        self.ops: list[Op] = []
        self.progress = threading.Condition()
        self.stop = threading.Event()
        self.snapshot_seen = threading.Event()
        self.errors: list[BaseException] = []

    def wait_for(self, predicate, what: str) -> None:
        with self.progress:
            if not self.progress.wait_for(lambda: predicate() or self.errors, timeout=WAIT_SECONDS):
                raise AssertionError(f"traffic did not reach: {what}")
        assert not self.errors, self.errors

    def count(self, *, after_snapshot: bool | None = None) -> int:
        return sum(1 for op in self.ops if after_snapshot is None or op.started_after_snapshot == after_snapshot)

    def _record(self, op: Op) -> None:
        with self.progress:
            self.ops.append(op)
            self.progress.notify_all()

    def _transfer(self, client, rng, user, auth) -> Op:
        to = rng.choice([w for u, w, _ in self.customers if u.id != user.id])
        key = uuid.uuid4().hex
        response = transfer(client, auth, to=to.handle, amount=rng.randint(1, 500), key=key)
        ids = [response.json()["transaction"]["id"]] if response.status_code == 201 else []
        return Op("transfer", user.id, key, response.status_code, False, ids)

    def _pay(self, client, rng, user, auth) -> Op:
        key = uuid.uuid4().hex
        response = pay(client, auth, merchant=self.shop.handle, amount=rng.randint(100, 2_000), key=key)
        body = response.json()
        ids = [body["transaction"]["id"]] if response.status_code == 201 else []
        if "cashback" in body:
            ids.append(body["cashback"]["transaction_id"])
        return Op("pay", user.id, key, response.status_code, False, ids)

    def _top_up(self, client, rng, user, auth) -> Op:
        key = uuid.uuid4().hex
        created = add_money(client, auth, {"amount": rng.randint(1_000, 50_000)}, key=key)
        assert created.status_code == 201, created.content
        body = created.json()
        event = {
            "id": f"evt_{uuid.uuid4().hex}",
            "type": "payment.succeeded",
            "data": {
                "payment_id": body["payment_id"],
                "amount": body["amount"],
                "currency": body["currency"],
                "gateway_reference": f"gw_{uuid.uuid4().hex}",
            },
        }
        delivered = deliver(client, event)
        assert delivered.status_code == 200, delivered.content
        attempt = PaymentAttempt.objects.get(id=body["payment_id"])
        assert attempt.transaction_id is not None, attempt.status
        return Op("topup", user.id, key, 201, False, [str(attempt.transaction_id)], body["payment_id"])

    def work(self, i: int) -> None:
        rng = random.Random(i)
        client = APIClient()
        user, _, auth = self.customers[i % len(self.customers)]
        steps = (self._transfer, self._pay, self._transfer, self._top_up)
        try:
            n = 0
            while not self.stop.is_set():
                after = self.snapshot_seen.is_set()
                op = steps[(n + i) % len(steps)](client, rng, user, auth)
                op.started_after_snapshot = after
                self._record(op)
                n += 1
        except BaseException as exc:
            with self.progress:
                self.errors.append(exc)
                self.progress.notify_all()
            raise
        finally:
            connection.close()


def _pg_dump_waits_for_a_lock() -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock' "
            "AND datname = current_database()",
            [APPLICATION_NAME],
        )
        return cursor.fetchone()[0] > 0


def _wait_until_pg_dump_waits(backup_future) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not _pg_dump_waits_for_a_lock():
        if backup_future.done():
            backup_future.result()
            raise AssertionError("the backup finished without waiting for the gate table")
        if time.monotonic() > deadline:
            raise AssertionError("pg_dump was never seen waiting for the gate table's lock")
        time.sleep(0.05)


def _ledger_rows(execute) -> tuple[set, set, dict]:
    transactions = {str(row[0]) for row in execute("SELECT id FROM ledger_transaction")}
    entries = {
        (str(t), e, a, amount, after)
        for t, e, a, amount, after in execute(
            "SELECT transaction_id, id, account_id, amount, balance_after FROM ledger_entry"
        )
    }
    accounts = {
        a: (balance, held) for a, balance, held in execute("SELECT id, balance, held_balance FROM ledger_account")
    }
    return transactions, entries, accounts


def _live(sql: str) -> list:
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.fetchall()


def _database_url(name: str) -> str:
    db = connection.settings_dict
    return f"postgresql://{quote(db['USER'])}@localhost:{db['PORT']}/{quote(name)}?host={quote(db['HOST'])}"


def test_a_backup_taken_under_money_traffic_restores_into_a_consistent_prefix_that_reconciles(tmp_path):
    # given customers with money, a merchant with a fee and a cashback campaign
    customers = []
    for _ in range(CUSTOMERS):
        user, wallet = register_user()
        fund(wallet, 1_000_000)
        customers.append((user, wallet, auth_header(user)))
    _, shop = merchant(fee_bps=150)
    fund_pool(1_000_000)
    campaign(bps=500, cap_per_payment=50, budget=500_000)
    traffic = Traffic(customers, shop)
    server = Server.of()
    gate = server.connect(server.database)
    gate.execute("CREATE TABLE backup_test_gate (id integer)")
    gate.commit()
    with restored_databases() as restored, ThreadPoolExecutor(max_workers=WORKERS + 1) as pool:
        workers = [pool.submit(traffic.work, i) for i in range(WORKERS)]
        try:
            # when traffic runs, the backup starts and pg_dump waits (snapshot taken) while
            # more money moves
            traffic.wait_for(lambda: traffic.count() >= BEFORE, f"{BEFORE} answered requests")
            gate.execute("LOCK TABLE backup_test_gate IN ACCESS EXCLUSIVE MODE")
            with traffic.progress:
                answered_before = list(traffic.ops)
            backup_future = pool.submit(backup_create, output=tmp_path / "wallet.dump")
            _wait_until_pg_dump_waits(backup_future)
            traffic.snapshot_seen.set()
            traffic.wait_for(
                lambda: traffic.count(after_snapshot=True) >= DURING, f"{DURING} requests sent during the dump"
            )
            gate.rollback()
            backup = backup_future.result(timeout=WAIT_SECONDS)
            answered = traffic.count()
            traffic.wait_for(lambda: traffic.count() >= answered + WORKERS, "requests after the backup")
        finally:
            traffic.stop.set()
            gate.rollback()
            for worker in workers:
                worker.result(timeout=WAIT_SECONDS)
            gate.execute("DROP TABLE backup_test_gate")
            gate.commit()
            gate.close()
        assert_ledger_consistent()
        name = restored.name("traffic")
        restore = backup_restore(path=backup.path, database=name)

        # then: the copy verifies and reconciles, as restore_database checks it
        check = restore_verify(database=name, manifest=restore.manifest)
        assert check.ok, check.problems
        assert check.reconciliation.ok and check.reconciliation.total_balance == 0
        # and as `manage.py reconcile` pointed at the copy by DATABASE_URL
        python = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
        reconciled = subprocess.run(
            [python, "manage.py", "reconcile"],
            cwd=ROOT,
            env={**os.environ, "DATABASE_URL": _database_url(name), "DJANGO_ENV": "test"},
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
        assert f"{check.figures.transactions} transactions, total balance 0" in reconciled.stdout

        with restored.connect(name) as replica:
            copied_txns, copied_entries, copied_accounts = _ledger_rows(lambda sql: replica.execute(sql).fetchall())
            keys = replica.execute(KEYS_SQL).fetchall()
            attempts = dict(replica.execute("SELECT id::text, transaction_id::text FROM wallets_paymentattempt"))
            succeeded = replica.execute(
                "SELECT transaction_id::text FROM wallets_paymentattempt WHERE status = 'succeeded'"
            ).fetchall()
            outbox = replica.execute(
                "SELECT payload->>'transaction_id' FROM ledger_outboxevent WHERE payload ? 'transaction_id'"
            ).fetchall()
        live_txns, live_entries, _ = _ledger_rows(_live)
        live_keys = {(k.user_id, k.key): (k.response_status, k.response_body) for k in IdempotencyKey.objects.all()}

    # a prefix: only transactions the live ledger has, each with all of its entries
    assert copied_txns < live_txns
    assert copied_entries == {e for e in live_entries if e[0] in copied_txns}
    assert len(copied_txns) == backup.figures.transactions and len(copied_entries) == backup.figures.entries
    # balances equal their entries, all sum to zero
    sums: dict[int, int] = {}
    for _, _, account, amount, _ in copied_entries:
        sums[account] = sums.get(account, 0) + amount
    assert {a: balance for a, (balance, _) in copied_accounts.items()} == {a: sums.get(a, 0) for a in copied_accounts}
    assert sum(balance for balance, _ in copied_accounts.values()) == 0
    # every idempotency key answers as the live one does and names what exists in the copy
    assert keys
    for user_id, key, status, body in keys:
        assert live_keys[(user_id, key)] == (status, body)
        if "transaction" in body:
            assert body["transaction"]["id"] in copied_txns
        if "cashback" in body:
            assert body["cashback"]["transaction_id"] in copied_txns
        if "checkout_url" in body:
            assert body["payment_id"] in attempts
    assert all(txn in copied_txns for (txn,) in succeeded) and succeeded
    assert all(txn in copied_txns for (txn,) in outbox) and outbox
    # what was answered before the backup is in it, whole; what was sent during it is not
    copied_keys = {(user_id, key) for user_id, key, _, _ in keys}
    for op in answered_before:
        assert (op.user_id, op.key) in copied_keys, op
        assert set(op.transaction_ids) <= copied_txns, op
    during = [op for op in traffic.ops if op.started_after_snapshot]
    assert len(during) >= DURING
    assert {op.kind for op in answered_before} == {"transfer", "pay", "topup"}
    for op in during:
        assert (op.user_id, op.key) not in copied_keys, op
        assert not set(op.transaction_ids) & copied_txns, op
        assert op.payment_attempt_id is None or op.payment_attempt_id not in attempts, op
