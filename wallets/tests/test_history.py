"""History: GET /wallet, /wallet/balance, /wallet/transactions, /transactions, /transactions/{id}."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from wallets.history import cursor_encode
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import fund, transfer

pytestmark = pytest.mark.django_db


@pytest.fixture
def parties(api):
    a_user, a_wallet = register_user(name="Asha")
    b_user, b_wallet = register_user(name="Bilal")
    fund(a_wallet, 100_000)
    return a_wallet, auth_header(a_user), b_wallet, auth_header(b_user)


def _send(api, auth, to, amounts):
    for amount in amounts:
        assert transfer(api, auth, to=to, amount=amount).status_code == 201


def test_wallet_and_balance(api, parties):
    a_wallet, a_auth, _, _ = parties
    wallet = api.get("/api/v1/wallet", **a_auth)
    assert wallet.status_code == 200
    assert wallet.json() == {
        "id": str(a_wallet.id),
        "handle": a_wallet.handle,
        "currency": "INR",
        "balance": 100_000,
        "available_balance": 100_000,
        "held_balance": 0,
        "status": "active",
    }
    balance = api.get("/api/v1/wallet/balance", **a_auth)
    assert balance.json() == {
        "wallet_id": str(a_wallet.id),
        "handle": a_wallet.handle,
        "currency": "INR",
        "balance": 100_000,
        "available_balance": 100_000,
        "held_balance": 0,
    }


def test_history_is_newest_first_with_running_balances(api, parties):
    _, a_auth, b_wallet, _ = parties
    _send(api, a_auth, b_wallet.handle, [100, 200, 300])
    page = api.get("/api/v1/wallet/transactions", **a_auth).json()
    assert [i["amount"] for i in page["data"]] == [300, 200, 100, 100_000]
    assert [i["balance_after"] for i in page["data"]] == [99_400, 99_700, 99_900, 100_000]
    assert [i["type"] for i in page["data"]] == ["transfer"] * 3 + ["deposit"]
    assert page["data"][-1]["counterparty"] is None
    assert page["has_more"] is False
    assert page["next_cursor"] is None


def test_both_history_routes_answer_the_same(api, parties):
    _, a_auth, b_wallet, _ = parties
    _send(api, a_auth, b_wallet.handle, [5, 6])
    assert api.get("/api/v1/wallet/transactions", **a_auth).json() == api.get("/api/v1/transactions", **a_auth).json()


def test_pages_follow_cursors_to_the_end_without_gaps(api, parties):
    _, a_auth, b_wallet, _ = parties
    _send(api, a_auth, b_wallet.handle, list(range(1, 26)))
    seen, cursor = [], None
    while True:
        query = {"limit": 7} | ({"cursor": cursor} if cursor else {})
        page = api.get("/api/v1/wallet/transactions", query, **a_auth).json()
        seen += [item["amount"] for item in page["data"]]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    assert seen == [*range(25, 0, -1), 100_000]


def test_filters(api, parties):
    a_wallet, a_auth, b_wallet, b_auth = parties
    _send(api, a_auth, b_wallet.handle, [10, 20])
    _send(api, b_auth, a_wallet.handle, [5])
    get = lambda **q: api.get("/api/v1/wallet/transactions", q, **a_auth).json()["data"]  # noqa: E731
    assert [i["amount"] for i in get(direction="debit")] == [20, 10]
    assert [i["amount"] for i in get(direction="credit")] == [5, 100_000]
    assert [i["amount"] for i in get(type="deposit")] == [100_000]
    assert [i["amount"] for i in get(type="deposit,transfer")] == [5, 20, 10, 100_000]
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    past = (timezone.now() - timedelta(hours=1)).isoformat()
    assert get(**{"from": future}) == []
    assert len(get(**{"from": past, "to": future})) == 4
    assert get(to=past) == []


@pytest.mark.parametrize(
    "query",
    [
        {"limit": 0},
        {"limit": 101},
        {"limit": "ten"},
        {"direction": "sideways"},
        {"type": "gift"},
        {"from": "yesterday"},
        {"from": "2030-01-02T00:00:00Z", "to": "2030-01-01T00:00:00Z"},
        {"colour": "blue"},
    ],
)
def test_bad_queries(api, parties, query):
    response = api.get("/api/v1/wallet/transactions", query, **parties[1])
    assert response.status_code == 400
    assert response.json()["code"] == "validation_failed"


def test_a_cursor_cannot_be_forged_or_moved_to_another_wallet(api, parties):
    a_wallet, a_auth, b_wallet, b_auth = parties
    _send(api, a_auth, b_wallet.handle, [1, 2, 3])
    # A cursor of Bilal's listing, replayed by Asha, and a made-up one.
    bilal_cursor = api.get("/api/v1/wallet/transactions", {"limit": 1}, **b_auth).json()["next_cursor"]
    for cursor in [bilal_cursor, "e:5", "garbage", cursor_encode(account_id=a_wallet.account_id, entry_id=5) + "x"]:
        response = api.get("/api/v1/wallet/transactions", {"cursor": cursor}, **a_auth)
        assert response.status_code == 400, cursor
        assert response.json()["code"] == "invalid_cursor"


def test_one_transaction_for_its_parties_only(api, parties):
    a_wallet, a_auth, b_wallet, b_auth = parties
    sent = transfer(api, a_auth, to=b_wallet.handle, amount=700).json()["transaction"]
    mine = api.get(f"/api/v1/transactions/{sent['id']}", **a_auth)
    assert mine.status_code == 200
    assert mine.json() == sent
    theirs = api.get(f"/api/v1/transactions/{sent['id']}", **b_auth).json()
    assert theirs["direction"] == "credit"
    assert theirs["counterparty"]["handle"] == a_wallet.handle
    outsider_user, _ = register_user()
    for txn_id in [sent["id"], "00000000-0000-0000-0000-000000000000", "not-a-uuid"]:
        response = api.get(f"/api/v1/transactions/{txn_id}", **auth_header(outsider_user))
        assert response.status_code == 404
        assert response.json()["code"] == "transaction_not_found"


def test_a_page_costs_a_fixed_number_of_queries(api, parties):
    # given a history with many counterparties
    _, a_auth, _, _ = parties
    for _ in range(12):
        _, other = register_user()
        transfer(api, a_auth, to=other.handle, amount=1)
    # when
    with CaptureQueriesContext(connection) as small:
        api.get("/api/v1/wallet/transactions", {"limit": 2}, **a_auth)
    with CaptureQueriesContext(connection) as large:
        api.get("/api/v1/wallet/transactions", {"limit": 13}, **a_auth)
    # then: authentication, the page (counterparties joined in), their wallets
    assert len(large) == len(small) <= 4, [q["sql"] for q in large.captured_queries]


def test_the_history_query_walks_the_account_index(parties):
    # given
    a_wallet, *_ = parties
    from ledger.selectors import HistoryFilter, account_entries_sql

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        # when
        sql = account_entries_sql(
            account="%(account_id)s", limit=21, before=True, filters=HistoryFilter(direction="debit")
        )
        cursor.execute("EXPLAIN " + sql, {"account_id": a_wallet.account_id, "before": 10**12})
        plan = "\n".join(row[0] for row in cursor.fetchall())
    # then
    assert "entry_account_history" in plan, plan
