"""Each rule the database enforces, tried with raw SQL: PostgreSQL must refuse it."""

from __future__ import annotations

import uuid

import pytest
from django.db import IntegrityError, InternalError, connection, transaction

from ledger.models import Account
from ledger.posting import Leg, PostingCommand, account_open, atomic, system_account, transaction_post

pytestmark = pytest.mark.django_db


def _funded_account(amount: int = 1000) -> Account:
    account = account_open(currency="INR")
    with transaction.atomic():
        transaction_post(
            command=PostingCommand(
                type="deposit",
                legs=[Leg(system_account("gateway_clearing").id, -amount), Leg(account.id, amount)],
            )
        )
    return account


def _sql(statement: str, params=()):
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_entries_refuse_update():
    # given
    account = _funded_account()
    # when / then
    with pytest.raises((IntegrityError, InternalError), match="append-only"):
        _sql("UPDATE ledger_entry SET amount = amount + 1 WHERE account_id = %s", [account.id])


def test_entries_refuse_delete():
    account = _funded_account()
    with pytest.raises((IntegrityError, InternalError), match="append-only"):
        _sql("DELETE FROM ledger_entry WHERE account_id = %s", [account.id])


def test_unbalanced_transaction_is_refused():
    account = _funded_account()
    txn = uuid.uuid4()
    with pytest.raises(IntegrityError, match="does not balance"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO ledger_transaction (id, type, note, reference) VALUES (%s, 'adjustment', '', '')", [txn]
            )
            cursor.execute(
                "INSERT INTO ledger_entry (transaction_id, account_id, amount, balance_after, type) "
                "VALUES (%s, %s, 5, 1005, 'adjustment'), (%s, %s, -4, -4, 'adjustment')",
                [txn, account.id, txn, system_account("adjustments").id],
            )


def test_single_leg_transaction_is_refused():
    account = _funded_account()
    txn = uuid.uuid4()
    with pytest.raises(IntegrityError, match="does not balance"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO ledger_transaction (id, type, note, reference) VALUES (%s, 'adjustment', '', '')", [txn]
            )
            cursor.execute(
                "INSERT INTO ledger_entry (transaction_id, account_id, amount, balance_after, type) "
                "VALUES (%s, %s, 5, 1005, 'adjustment')",
                [txn, account.id],
            )


def test_legs_split_across_statements_are_refused():
    # Each INSERT must bring balanced legs, so a half-written transaction never exists.
    account = _funded_account()
    txn = uuid.uuid4()
    with pytest.raises(IntegrityError, match="does not balance"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO ledger_transaction (id, type, note, reference) VALUES (%s, 'adjustment', '', '')", [txn]
            )
            cursor.execute(
                "INSERT INTO ledger_entry (transaction_id, account_id, amount, balance_after, type) VALUES (%s, %s, 5, 1005, 'adjustment')",
                [txn, account.id],
            )
            cursor.execute(
                "INSERT INTO ledger_entry (transaction_id, account_id, amount, balance_after, type) VALUES (%s, %s, -5, -5, 'adjustment')",
                [txn, system_account("adjustments").id],
            )


def test_negative_customer_balance_is_refused():
    account = _funded_account(100)
    with pytest.raises(IntegrityError, match=r"customer_(balance|available)_not_negative"):
        _sql("UPDATE ledger_account SET balance = -1 WHERE id = %s", [account.id])


def test_negative_held_and_available_are_refused():
    account = _funded_account(100)
    with pytest.raises(IntegrityError, match="held_not_negative"):
        _sql("UPDATE ledger_account SET held_balance = -1 WHERE id = %s", [account.id])
    with pytest.raises(IntegrityError, match="customer_available_not_negative"):
        _sql("UPDATE ledger_account SET held_balance = 101 WHERE id = %s", [account.id])


def test_system_accounts_may_go_negative():
    _funded_account(100)
    assert system_account("gateway_clearing").balance == -100


def test_audit_log_is_append_only():
    with atomic():
        from ledger.audit import audit_record

        audit_record(actor=None, actor_label="system:test", action="test", target="account:1", reason="because")
    with pytest.raises((IntegrityError, InternalError), match="append-only"):
        _sql("UPDATE ledger_auditlog SET reason = 'changed'")
    with pytest.raises((IntegrityError, InternalError), match="append-only"):
        _sql("DELETE FROM ledger_auditlog")


def test_entry_referencing_missing_account_is_refused():
    txn = uuid.uuid4()
    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO ledger_transaction (id, type, note, reference) VALUES (%s, 'adjustment', '', '')", [txn]
        )
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        cursor.execute(
            "INSERT INTO ledger_entry (transaction_id, account_id, amount, balance_after, type) "
            "VALUES (%s, 999999, 5, 5, 'adjustment'), (%s, %s, -5, -5, 'adjustment')",
            [txn, txn, system_account("adjustments").id],
        )
