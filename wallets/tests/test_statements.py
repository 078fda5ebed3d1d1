"""Monthly statements: opening + entries == closing, every entry's balance_after as history
shows it, month boundaries, JSON and CSV agree, bad months refused, bounded queries.

Entries are append-only and get created_at = now() from the database, so every entry a test
makes is in the current month. Boundaries are tested by what that implies (the previous
month is empty, the next one opens at the current balance) and through
`statement_for_period` with a boundary taken from the database clock between entries.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.services import staff_create
from ledger.tests.invariants import assert_ledger_consistent
from wallets.statements import (
    CSV_COLUMNS,
    _month_bounds,
    statement_for_period,
    statement_items,
    statement_month_parse,
    wallet_statement,
)
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import balance_of, fund, transfer

pytestmark = pytest.mark.django_db


def _this_month() -> date:
    return datetime.now(UTC).date().replace(day=1)


def _label(month: date) -> str:
    return f"{month.year:04d}-{month.month:02d}"


def _previous(month: date) -> date:
    return (month - timedelta(days=1)).replace(day=1)


def _next(month: date) -> date:
    return (month + timedelta(days=32)).replace(day=1)


def _db_now() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]


def _signed(item: dict) -> int:
    return item["amount"] if item["direction"] == "credit" else -item["amount"]


@pytest.fixture
def alice(api):
    """A wallet with deposits, transfers out and in, notes included."""
    user, wallet = register_user(name="alice")
    bob_user, bob = register_user(name="bob")
    fund(wallet, 10_000)
    fund(bob, 5_000)
    assert transfer(api, auth_header(user), to=bob.handle, amount=1_250, note="lunch").status_code == 201
    assert transfer(api, auth_header(bob_user), to=wallet.handle, amount=300, note="=HYPERLINK(1)").status_code == 201
    fund(wallet, 77)
    return user, wallet


def _get(api, user, month: str, **query):
    return api.get(f"/api/v1/wallet/statements/{month}", query, **auth_header(user))


def _json(response) -> dict:
    return json.loads(b"".join(response.streaming_content))


def _csv(response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_the_month_adds_up_and_agrees_with_history(api, alice):
    # given
    user, wallet = alice
    month = _label(_this_month())
    # when
    response = _get(api, user, month)
    history = api.get("/api/v1/wallet/transactions", {"limit": 100}, **auth_header(user)).json()["data"]
    # then
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = _json(response)
    assert set(body) == {"month", "currency", "opening_balance", "closing_balance", "entries"}
    assert (body["month"], body["currency"], body["opening_balance"]) == (month, "INR", 0)
    assert body["entries"] == list(reversed(history))
    assert body["closing_balance"] == body["opening_balance"] + sum(_signed(e) for e in body["entries"])
    assert body["closing_balance"] == balance_of(wallet) == 10_000 - 1_250 + 300 + 77
    running = body["opening_balance"]
    for entry in body["entries"]:
        running += _signed(entry)
        assert entry["balance_after"] == running
    assert [e["type"] for e in body["entries"]] == ["deposit", "transfer", "transfer", "deposit"]
    assert all(isinstance(e["amount"], int) for e in body["entries"])
    assert_ledger_consistent()


def test_the_previous_month_is_empty_and_the_next_opens_at_the_balance(api, alice):
    # given
    user, wallet = alice
    this = _this_month()
    # when
    previous = _json(_get(api, user, _label(_previous(this))))
    following = wallet_statement(wallet=wallet, month=_next(this))
    # then
    assert previous == {
        "month": _label(_previous(this)),
        "currency": "INR",
        "opening_balance": 0,
        "closing_balance": 0,
        "entries": [],
    }
    assert following.opening_balance == following.closing_balance == balance_of(wallet)
    assert following.entry_count == 0 and list(statement_items(statement=following)) == []


def test_a_period_starting_between_entries_opens_at_the_balance_before_it():
    # given: entries, a boundary taken from the database clock, more entries
    _, wallet = register_user()
    _, other = register_user()
    fund(wallet, 4_000)
    fund(wallet, 1_000)
    boundary = _db_now()
    fund(wallet, 250)
    fund(other, 999)  # another wallet's entry: not in this statement
    fund(wallet, 5)
    # when
    statement = statement_for_period(wallet=wallet, label="p", start=boundary, end=boundary + timedelta(days=1))
    items = list(statement_items(statement=statement))
    earlier = statement_for_period(wallet=wallet, label="e", start=boundary - timedelta(days=1), end=boundary)
    # then
    assert statement.opening_balance == 5_000
    assert [i["amount"] for i in items] == [250, 5]
    assert statement.closing_balance == 5_255 == items[-1]["balance_after"]
    assert (earlier.opening_balance, earlier.closing_balance, earlier.entry_count) == (0, 5_000, 2)
    assert earlier.closing_balance == statement.opening_balance


def test_entries_arriving_while_a_statement_is_read_are_left_out_consistently():
    # given: a statement started, then a new entry in the same month
    _, wallet = register_user()
    fund(wallet, 100)
    statement = wallet_statement(wallet=wallet, month=_this_month())
    fund(wallet, 50)
    # when
    items = list(statement_items(statement=statement))
    # then
    assert [i["amount"] for i in items] == [100]
    assert statement.closing_balance == 100 == items[-1]["balance_after"]


def test_batches_read_the_same_items_as_one_read():
    # given
    _, wallet = register_user()
    for amount in range(1, 18):
        fund(wallet, amount)
    statement = wallet_statement(wallet=wallet, month=_this_month())
    # when
    batched = list(statement_items(statement=statement, batch_size=5))
    whole = list(statement_items(statement=statement))
    # then
    assert batched == whole
    assert [i["amount"] for i in whole] == list(range(1, 18))


def test_the_queries_do_not_grow_with_the_entries(api):
    # given: two wallets, with 3 and 30 entries
    small_user, small = register_user()
    big_user, big = register_user()
    for n in range(3):
        fund(small, 10 + n)
    for n in range(30):
        fund(big, 10 + n)
    month = _label(_this_month())

    def count(user) -> int:
        with CaptureQueriesContext(connection) as queries:
            response = _get(api, user, month)
            b"".join(response.streaming_content)
        return len(queries)

    # when / then
    assert count(small_user) == count(big_user)


def test_csv_is_the_same_statement_as_json(api, alice):
    # given
    user, wallet = alice
    month = _label(_this_month())
    body = _json(_get(api, user, month))
    # when
    response = _get(api, user, month, format="csv")
    # then
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    handle = wallet.handle.split("@")[0]
    assert response["Content-Disposition"] == f'attachment; filename="statement-{handle}-{month}.csv"'
    rows = _csv(response)
    assert tuple(rows[0]) == CSV_COLUMNS
    column = {name: i for i, name in enumerate(CSV_COLUMNS)}
    opening, *entries, closing = rows[1:]
    assert opening[column["type"]] == "opening_balance"
    assert int(opening[column["balance_after"]]) == body["opening_balance"]
    assert closing[column["type"]] == "closing_balance"
    assert int(closing[column["balance_after"]]) == body["closing_balance"]
    assert len(entries) == len(body["entries"])
    for row, item in zip(entries, body["entries"], strict=True):
        assert row[column["transaction_id"]] == item["id"]
        assert row[column["created_at"]] == item["created_at"]
        assert (row[column["type"]], row[column["direction"]]) == (item["type"], item["direction"])
        assert int(row[column["amount"]]) == item["amount"]
        assert int(row[column["signed_amount"]]) == _signed(item)
        assert int(row[column["balance_after"]]) == item["balance_after"]
        assert row[column["counterparty_handle"]] == ((item["counterparty"] or {}).get("handle") or "")
    assert body["opening_balance"] + sum(int(r[column["signed_amount"]]) for r in entries) == body["closing_balance"]
    # no float anywhere, and a note that a spreadsheet would run as a formula is quoted
    assert "." not in "".join(r[column["amount"]] + r[column["balance_after"]] for r in entries)
    assert [r[column["note"]] for r in entries] == ["", "lunch", "'=HYPERLINK(1)", ""]


def test_only_the_callers_entries(api, alice):
    # given: alice's entries, and another wallet's
    other_user, other = register_user()
    fund(other, 12_345)
    # when
    body = _json(_get(api, other_user, _label(_this_month())))
    # then
    assert [e["amount"] for e in body["entries"]] == [12_345]
    assert body["closing_balance"] == 12_345


@pytest.mark.parametrize(
    "month",
    ["2026-13", "2026-00", "26-01", "2026-1", "2026-001", "abcd-ef", "1999-12", "2026_01", "202601", " 2026-01"],
)
def test_a_malformed_month_is_400(api, month):
    user, _ = register_user()
    response = _get(api, user, month)
    assert response.status_code == 400
    assert response.json()["code"] == "validation_failed"


def test_a_month_that_has_not_begun_is_400(api):
    user, _ = register_user()
    response = _get(api, user, _label(_next(_this_month())))
    assert response.status_code == 400
    assert response.json()["code"] == "validation_failed"
    assert "future" in response.json()["detail"]


@pytest.mark.parametrize("query", [{"format": "xml"}, {"format": "CSV"}, {"formta": "csv"}, {"limit": "5"}])
def test_bad_query_parameters_are_400(api, query):
    user, _ = register_user()
    response = _get(api, user, _label(_this_month()), **query)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["code"] == "validation_failed"


def test_without_a_token_401_and_staff_without_a_wallet_403(api):
    staff = staff_create(email="ops@example.com", role="operations", password="staff password 1")
    month = _label(_this_month())
    anonymous = api.get(f"/api/v1/wallet/statements/{month}")
    refused = _get(api, staff, month)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "authentication_required"
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"


def test_month_parsing_and_bounds():
    assert statement_month_parse(month="2026-02", today=date(2026, 3, 9)) == date(2026, 2, 1)
    assert statement_month_parse(month="2026-03", today=date(2026, 3, 9)) == date(2026, 3, 1)
    assert _month_bounds(date(2026, 12, 1)) == (datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
    assert _month_bounds(date(2024, 2, 1))[1] == datetime(2024, 3, 1, tzinfo=UTC)
