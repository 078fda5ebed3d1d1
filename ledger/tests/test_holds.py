"""Holds: reserve, then post or release, exactly once, also when raced."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import IntegrityError, InternalError, connection, transaction

from ledger.holds import hold_place, hold_post, hold_release
from ledger.models import Account, Hold
from ledger.posting import Leg, PostingCommand, account_open, atomic, system_account, transaction_post
from ledger.reconciliation import reconciliation_run
from ledger.tests.invariants import assert_ledger_consistent
from walletsite.errors import InsufficientFunds

pytestmark = pytest.mark.django_db


def _funded(amount: int) -> Account:
    account = account_open(currency="INR")
    with atomic():
        transaction_post(
            command=PostingCommand(
                type="deposit", legs=(Leg(system_account("gateway_clearing").id, -amount), Leg(account.id, amount))
            )
        )
    return account


def _state(account: Account) -> tuple[int, int]:
    account.refresh_from_db()
    return account.balance, account.held_balance


def test_a_hold_reserves_without_moving_money():
    account = _funded(1_000)
    with atomic():
        hold = hold_place(account_id=account.id, amount=600, reference="withdrawal:1")
    assert _state(account) == (1_000, 600)
    assert hold.status == Hold.Status.PENDING
    assert_ledger_consistent()


def test_held_money_cannot_be_held_or_spent_again():
    account, other = _funded(1_000), account_open(currency="INR")
    with atomic():
        hold_place(account_id=account.id, amount=600, reference="withdrawal:1")
    with atomic(), pytest.raises(InsufficientFunds):
        hold_place(account_id=account.id, amount=401, reference="withdrawal:2")
    with atomic(), pytest.raises(InsufficientFunds):
        transaction_post(command=PostingCommand(type="transfer", legs=(Leg(account.id, -401), Leg(other.id, 401))))
    assert _state(account) == (1_000, 600)


def test_posting_a_hold_debits_once():
    account, payouts = _funded(1_000), system_account("bank_payouts")
    with atomic():
        hold = hold_place(account_id=account.id, amount=1_000, reference="withdrawal:1")
    with atomic():
        posted = hold_post(hold_id=hold.id, to_account_id=payouts.id, type="withdrawal")
    assert posted is not None
    assert posted.entry_for(account.id).balance_after == 0
    assert _state(account) == (0, 0)
    with atomic():
        assert hold_post(hold_id=hold.id, to_account_id=payouts.id, type="withdrawal") is None
        assert hold_release(hold_id=hold.id) is None
    hold.refresh_from_db()
    assert (hold.status, hold.transaction_id) == ("posted", posted.transaction.id)
    assert _state(account) == (0, 0)
    assert_ledger_consistent()


def test_releasing_a_hold_gives_the_money_back_once():
    account = _funded(1_000)
    with atomic():
        hold = hold_place(account_id=account.id, amount=700, reference="withdrawal:1")
    with atomic():
        assert hold_release(hold_id=hold.id).status == Hold.Status.RELEASED
    with atomic():
        assert hold_release(hold_id=hold.id) is None
        assert hold_post(hold_id=hold.id, to_account_id=system_account("bank_payouts").id, type="withdrawal") is None
    assert _state(account) == (1_000, 0)
    assert_ledger_consistent()


def test_one_reference_reserves_once():
    account = _funded(1_000)
    with atomic():
        hold_place(account_id=account.id, amount=10, reference="withdrawal:1")
    with pytest.raises(IntegrityError), atomic():
        hold_place(account_id=account.id, amount=10, reference="withdrawal:1")
    assert _state(account) == (1_000, 10)


def test_a_check_refuses_the_hold():
    account = _funded(1_000)

    def refuse(_accounts):
        raise InsufficientFunds("refused by the check")

    with atomic(), pytest.raises(InsufficientFunds):
        hold_place(account_id=account.id, amount=10, reference="withdrawal:1", check=refuse)
    assert _state(account) == (1_000, 0)


@pytest.mark.parametrize("amount", [0, -5, 1.5, True])
def test_bad_amounts_are_programming_errors(amount):
    account = _funded(10)
    with atomic(), pytest.raises(ValueError):
        hold_place(account_id=account.id, amount=amount, reference="x")


def test_the_database_refuses_a_second_transition_and_edits():
    account = _funded(1_000)
    with atomic():
        hold = hold_place(account_id=account.id, amount=100, reference="withdrawal:1")
    for sql in (
        "UPDATE ledger_hold SET amount = 1 WHERE id = %s",
        "DELETE FROM ledger_hold WHERE id = %s",
    ):
        with pytest.raises((IntegrityError, InternalError)), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [hold.id])
    with atomic():
        hold_release(hold_id=hold.id)
    with pytest.raises((IntegrityError, InternalError), match="already released"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE ledger_hold SET status = 'pending', resolved_at = NULL WHERE id = %s", [hold.id])


def test_reconciliation_finds_a_held_balance_without_its_holds():
    account = _funded(1_000)
    with atomic():
        hold_place(account_id=account.id, amount=100, reference="withdrawal:1")
    assert reconciliation_run(triggered_by="test").ok
    Account.objects.filter(id=account.id).update(held_balance=150)
    run = reconciliation_run(triggered_by="test")
    assert not run.ok
    assert [m["kind"] for m in run.mismatches] == ["held_not_sum_of_pending_holds"]


@pytest.mark.django_db(transaction=True)
def test_racing_posts_and_releases_resolve_a_hold_exactly_once():
    # given one hold, and 10 threads that each try to post or release it at once
    account, payouts = _funded(1_000), system_account("bank_payouts")
    with atomic():
        hold = hold_place(account_id=account.id, amount=400, reference="withdrawal:race")
    barrier = threading.Barrier(10)

    def settle(i):
        try:
            barrier.wait(timeout=30)
            with atomic():
                if i % 2:
                    return "posted" if hold_post(hold_id=hold.id, to_account_id=payouts.id, type="withdrawal") else None
                return "released" if hold_release(hold_id=hold.id) else None
        finally:
            connection.close()

    # when
    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = [o for o in pool.map(settle, range(10)) if o]
    # then
    assert len(outcomes) == 1
    hold.refresh_from_db()
    assert hold.status == outcomes[0]
    assert _state(account) == ((600, 0) if outcomes[0] == "posted" else (1_000, 0))
    assert_ledger_consistent()
