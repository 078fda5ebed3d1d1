"""Withdrawals in history: pending while held, then the posted entry or a reversed item, in a
fixed place among the entries; cursor pages over entries and withdrawals mixed, without gaps
or repeats; filters; GET /transactions/{id} with a withdrawal id; a fixed query count."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import Withdrawal
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import fund, transfer
from wallets.tests.test_withdrawals import add_bank_account, bank_event, withdraw
from wallets.withdrawals import bank_event_process

pytestmark = pytest.mark.django_db


@pytest.fixture
def asha(api):
    user, wallet = register_user(name="Asha")
    fund(wallet, 100_000)
    _, other = register_user(name="Bilal")
    return wallet, auth_header(user), add_bank_account(wallet), other


def history(api, headers, **query) -> dict:
    response = api.get("/api/v1/wallet/transactions", query, **headers)
    assert response.status_code == 200, response.content
    return response.json()


def all_pages(api, headers, limit: int, **query) -> list[dict]:
    items, cursor = [], None
    while True:
        page = history(api, headers, limit=limit, **({"cursor": cursor} if cursor else {}), **query)
        items += page["data"]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return items
        cursor = page["next_cursor"]


def test_a_withdrawal_shows_pending_then_posted(api, asha):
    # given: a transfer, then a withdrawal held
    _wallet, headers, account, other = asha
    transfer(api, headers, to=other.handle, amount=1000)
    withdrawal_id = withdraw(api, headers, amount=30_000, bank_account=account.id).json()["withdrawal_id"]
    # when
    held = history(api, headers)["data"]
    # then: newest first, the withdrawal pending, the posted balance unchanged by the hold
    assert [(i["type"], i["status"]) for i in held] == [
        ("withdrawal", "pending"),
        ("transfer", "posted"),
        ("deposit", "posted"),
    ]
    assert held[0] == {
        "id": withdrawal_id,
        "type": "withdrawal",
        "direction": "debit",
        "amount": 30_000,
        "currency": "INR",
        "balance_after": 99_000,
        "status": "pending",
        "counterparty": None,
        "note": "",
        "created_at": held[0]["created_at"],
    }
    # when: the bank pays, and a transfer follows
    bank_event_process(event=bank_event(Withdrawal.objects.get(id=withdrawal_id), "succeeded"))
    transfer(api, headers, to=other.handle, amount=500)
    posted = history(api, headers)["data"]
    # then: the pending item became the posted entry, which has its own balance
    assert [(i["type"], i["status"], i["amount"], i["balance_after"]) for i in posted] == [
        ("transfer", "posted", 500, 68_500),
        ("withdrawal", "posted", 30_000, 69_000),
        ("transfer", "posted", 1000, 99_000),
        ("deposit", "posted", 100_000, 100_000),
    ]
    assert posted[1]["id"] == str(Withdrawal.objects.get(id=withdrawal_id).transaction_id)
    assert_ledger_consistent()


def test_a_released_withdrawal_shows_reversed_in_its_place(api, asha):
    # given
    _wallet, headers, account, other = asha
    withdrawal_id = withdraw(api, headers, amount=30_000, bank_account=account.id).json()["withdrawal_id"]
    transfer(api, headers, to=other.handle, amount=1000)
    # when
    bank_event_process(event=bank_event(Withdrawal.objects.get(id=withdrawal_id), "failed"))
    items = history(api, headers)["data"]
    # then
    assert [(i["type"], i["status"], i["balance_after"]) for i in items] == [
        ("transfer", "posted", 99_000),
        ("withdrawal", "reversed", 100_000),
        ("deposit", "posted", 100_000),
    ]
    assert items[1]["id"] == withdrawal_id
    assert_ledger_consistent()


def test_pages_over_entries_and_withdrawals_have_no_gaps_or_repeats(api, asha):
    # given: transfers and withdrawals interleaved, some withdrawals back to back
    _wallet, headers, account, other = asha
    ids = []
    for step in range(4):
        transfer(api, headers, to=other.handle, amount=100 + step)
        for _ in range(step % 3):
            ids.append(withdraw(api, headers, amount=1000, bank_account=account.id).json()["withdrawal_id"])
    bank_event_process(event=bank_event(Withdrawal.objects.get(id=ids[0]), "succeeded"))
    bank_event_process(event=bank_event(Withdrawal.objects.get(id=ids[1]), "failed"))
    everything = history(api, headers, limit=100)["data"]
    # when / then: every page size walks the same list
    assert len(everything) == 1 + 4 + len(ids)
    for limit in (1, 2, 3, 5):
        assert all_pages(api, headers, limit) == everything, limit
    assert len({i["id"] for i in everything}) == len(everything)
    assert_ledger_consistent()


def test_filters_apply_to_withdrawals(api, asha):
    # given
    _wallet, headers, account, other = asha
    transfer(api, headers, to=other.handle, amount=1000)
    withdraw(api, headers, amount=2000, bank_account=account.id)
    # when / then
    assert [i["type"] for i in history(api, headers, type="withdrawal")["data"]] == ["withdrawal"]
    assert [i["type"] for i in history(api, headers, type="transfer")["data"]] == ["transfer"]
    assert [i["type"] for i in history(api, headers, direction="credit")["data"]] == ["deposit"]
    assert [i["type"] for i in history(api, headers, direction="debit")["data"]] == ["withdrawal", "transfer"]
    assert history(api, headers, **{"from": "2999-01-01T00:00:00Z"})["data"] == []


def test_a_withdrawal_is_found_by_its_id_for_its_owner_only(api, asha):
    # given
    _wallet, headers, account, other = asha
    withdrawal_id = withdraw(api, headers, amount=2000, bank_account=account.id).json()["withdrawal_id"]
    # when
    pending = api.get(f"/api/v1/transactions/{withdrawal_id}", **headers)
    outsider = api.get(f"/api/v1/transactions/{withdrawal_id}", **auth_header(other.user))
    bank_event_process(event=bank_event(Withdrawal.objects.get(id=withdrawal_id), "succeeded"))
    posted = api.get(f"/api/v1/transactions/{withdrawal_id}", **headers)
    # then
    assert pending.status_code == 200 and pending.json()["status"] == "pending"
    assert outsider.status_code == 404 and outsider.json()["code"] == "transaction_not_found"
    assert posted.json()["status"] == "posted" and posted.json()["type"] == "withdrawal"
    transaction_id = posted.json()["id"]
    assert api.get(f"/api/v1/transactions/{transaction_id}", **headers).json() == posted.json()
    assert_ledger_consistent()


def test_a_page_with_withdrawals_costs_a_fixed_number_of_queries(api, asha):
    # given
    _wallet, headers, account, _ = asha
    for _ in range(6):
        _, other = register_user()
        transfer(api, headers, to=other.handle, amount=1)
        withdraw(api, headers, amount=10, bank_account=account.id)
    # when
    with CaptureQueriesContext(connection) as small:
        history(api, headers, limit=2)
    with CaptureQueriesContext(connection) as large:
        history(api, headers, limit=13)
    # then
    assert len(large) == len(small) <= 4, [q["sql"] for q in large.captured_queries]
