"""The posting service: batches where each command succeeds or fails on its own, running
balances, the checks it runs under the locks, and what it refuses to write at all."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ledger.models import Account, Entry, Transaction
from ledger.posting import (
    MAX_BALANCE,
    Leg,
    Posted,
    PostingCommand,
    Rejected,
    account_open,
    accounts_lock,
    atomic,
    system_account,
    transaction_post,
    transactions_post,
)
from ledger.tests.invariants import assert_ledger_consistent
from walletsite.errors import CurrencyMismatch, InsufficientFunds, LimitExceeded, WalletFrozen

pytestmark = pytest.mark.django_db


def _deposit(account: Account, amount: int) -> PostingCommand:
    return PostingCommand(
        type="deposit", legs=(Leg(system_account("gateway_clearing").id, -amount), Leg(account.id, amount))
    )


def _move(src: Account, dst: Account, amount: int, **kw) -> PostingCommand:
    return PostingCommand(type="transfer", legs=(Leg(src.id, -amount), Leg(dst.id, amount)), **kw)


def _balance(account: Account) -> int:
    account.refresh_from_db()
    return account.balance


def test_a_batch_posts_what_it_can_and_refuses_the_rest():
    # given
    a, b = account_open(currency="INR"), account_open(currency="INR")
    # when: a deposit, a transfer it pays for, one it cannot pay for, and one more it can
    with atomic():
        results = transactions_post(commands=[_deposit(a, 100), _move(a, b, 60), _move(a, b, 50), _move(a, b, 40)])
    # then
    assert [type(r) for r in results] == [Posted, Posted, Rejected, Posted]
    assert isinstance(results[2].error, InsufficientFunds)
    assert _balance(a) == 0
    assert _balance(b) == 100
    # balance_after runs through the batch in order
    assert list(Entry.objects.filter(account=a).order_by("id").values_list("balance_after", flat=True)) == [100, 40, 0]
    assert Transaction.objects.count() == 3
    assert_ledger_consistent()


def test_a_check_refuses_only_its_own_command():
    a, b = account_open(currency="INR"), account_open(currency="INR")

    def frozen(_accounts):
        raise WalletFrozen("frozen for the test")

    with atomic():
        results = transactions_post(commands=[_deposit(a, 10), _move(a, b, 5, check=frozen), _move(a, b, 3)])
    assert [type(r) for r in results] == [Posted, Rejected, Posted]
    assert isinstance(results[1].error, WalletFrozen)
    assert (_balance(a), _balance(b)) == (7, 3)


def test_checks_see_the_locked_rows():
    a, b = account_open(currency="INR"), account_open(currency="INR")
    seen = {}

    def look(accounts):
        seen.update({k: v.balance for k, v in accounts.items()})

    with atomic():
        transaction_post(command=_deposit(a, 10))
    with atomic():
        transaction_post(command=_move(a, b, 4, check=look))
    assert seen == {a.id: 10, b.id: 0}


def test_held_money_cannot_be_spent():
    a, b = account_open(currency="INR"), account_open(currency="INR")
    with atomic():
        transaction_post(command=_deposit(a, 100))
    Account.objects.filter(id=a.id).update(held_balance=70)
    with atomic(), pytest.raises(InsufficientFunds):
        transaction_post(command=_move(a, b, 31))
    with atomic():
        transaction_post(command=_move(a, b, 30))
    assert _balance(a) == 70


def test_currencies_must_match():
    a, b = account_open(currency="INR"), account_open(currency="USD")
    with atomic():
        transaction_post(command=_deposit(a, 10))
    with atomic(), pytest.raises(CurrencyMismatch):
        transaction_post(command=_move(a, b, 5))
    assert _balance(a) == 10


def test_balances_stay_within_what_json_clients_read_exactly():
    a = account_open(currency="INR")
    with atomic():
        transaction_post(command=_deposit(a, MAX_BALANCE))
    with atomic(), pytest.raises(LimitExceeded):
        transaction_post(command=_deposit(a, 1))
    assert _balance(a) == MAX_BALANCE


@pytest.mark.parametrize(
    "legs",
    [
        [(1, 5)],
        [(1, 5), (2, -4)],
        [(1, 0), (2, 0)],
        [(1, 5), (1, -5)],
        [(1, 1.5), (2, -1.5)],
        [(1, True), (2, -1)],
    ],
)
def test_malformed_commands_are_programming_errors(legs):
    with pytest.raises(ValueError):
        PostingCommand(type="transfer", legs=tuple(Leg(a, m) for a, m in legs))


def test_unknown_types_are_refused():
    with pytest.raises(ValueError):
        PostingCommand(type="gift", legs=(Leg(1, 1), Leg(2, -1)))


@pytest.mark.django_db(transaction=True)
def test_posting_outside_a_transaction_is_refused():
    a = account_open(currency="INR")
    with pytest.raises(RuntimeError):
        transaction_post(command=_deposit(a, 1))


def test_nothing_is_written_when_every_command_is_refused():
    a, b = account_open(currency="INR"), account_open(currency="INR")
    with atomic():
        results = transactions_post(commands=[_move(a, b, 1), _move(b, a, 1)])
    assert all(isinstance(r, Rejected) for r in results)
    assert Entry.objects.count() == 0


def test_accounts_are_locked_in_id_order_with_one_statement():
    # given
    a, b, c = (account_open(currency="INR") for _ in range(3))
    # when: asked in another order
    with atomic(), CaptureQueriesContext(connection) as queries:
        locked = accounts_lock(account_ids=[c.id, a.id, b.id, a.id])
    # then: one SELECT ... ORDER BY id FOR NO KEY UPDATE, rows back in id order
    (query,) = [q["sql"] for q in queries.captured_queries if "FOR NO KEY UPDATE" in q["sql"]]
    assert "ORDER BY a.id FOR NO KEY UPDATE OF a" in query
    assert list(locked) == sorted([a.id, b.id, c.id])
    assert [account.balance for account in locked.values()] == [0, 0, 0]


def test_unknown_accounts_are_a_programming_error():
    with atomic(), pytest.raises(ValueError):
        accounts_lock(account_ids=[10**12])
