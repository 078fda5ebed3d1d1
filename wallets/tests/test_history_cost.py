"""What a history page costs, and who it answers: one statement per page (the login, the
wallet, the entries with their counterparties, the withdrawals) at any depth, with any
cursor and filter; a plan on the history index with both bounds of the keyset, also where
the planner's statistics would lead it down the primary key; an ended login or a staff user
answered as on the routes that authenticate up front (401, then 403, then the rest)."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import TokenFamily, User
from accounts.tokens import session_start
from ledger.posting import Leg, PostingCommand, atomic, transactions_post
from ledger.selectors import HistoryFilter
from ledger.tests.invariants import assert_ledger_consistent
from wallets.history import _ME_BY_LOGIN, Cursor, _page_params, _page_sql
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import fund, transfer
from wallets.tests.test_withdrawals import add_bank_account, withdraw
from walletsite.testing import explain_generic_plan

pytestmark = pytest.mark.django_db

ROUTES = ["/api/v1/wallet/transactions", "/api/v1/transactions"]


def _page(api, route, headers, **query):
    response = api.get(route, query, **headers)
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def busy(api):
    """Asha: a deposit, transfers to six wallets and three withdrawals held among them."""
    user, wallet = register_user(name="Asha")
    fund(wallet, 100_000)
    headers = auth_header(user)
    account = add_bank_account(wallet)
    for i in range(6):
        _, other = register_user(name=f"Other {i}")
        assert transfer(api, headers, to=other.handle, amount=10 + i).status_code == 201
        if i % 2:
            assert withdraw(api, headers, amount=100, bank_account=account.id).status_code in (201, 202)
    return wallet, headers


@pytest.mark.parametrize("route", ROUTES)
def test_every_page_is_one_statement_whatever_its_depth_cursor_or_filter(api, busy, route):
    # given: the cursors of every page of two items (after entries and after withdrawals)
    _, headers = busy
    cursors, cursor = [None], None
    while True:
        page = _page(api, route, headers, limit=2, **({"cursor": cursor} if cursor else {}))
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
        cursors.append(cursor)
    assert len(cursors) >= 5
    queries = []
    # when: each page again, and filtered pages
    for cursor in cursors:
        with CaptureQueriesContext(connection) as captured:
            _page(api, route, headers, limit=2, **({"cursor": cursor} if cursor else {}))
        queries.append(len(captured))
    for query in ({"type": "withdrawal"}, {"direction": "credit"}, {"type": "transfer,withdrawal", "limit": 100}):
        with CaptureQueriesContext(connection) as captured:
            _page(api, route, headers, **query)
        queries.append(len(captured))
    # then: the login is checked in the page's own statement: no query of its own
    assert queries == [1] * len(queries), queries


@pytest.mark.parametrize("route", ROUTES)
def test_an_ended_login_answers_401_before_any_other_refusal(api, busy, route):
    # given
    wallet, headers = busy
    cursor = _page(api, route, headers, limit=1)["next_cursor"]
    TokenFamily.objects.filter(user=wallet.user).update(revoked_at=timezone.now())
    # when / then: a good query, a bad one, a forged cursor
    for query in ({}, {"cursor": cursor}, {"limit": 0}, {"cursor": "forged"}, {"direction": "sideways"}):
        response = api.get(route, query, **headers)
        assert response.status_code == 401, (query, response.content)
        assert response.json()["code"] == "invalid_token"


def test_an_inactive_user_answers_401(api, busy):
    wallet, headers = busy
    User.objects.filter(id=wallet.user_id).update(is_active=False)
    response = api.get(ROUTES[0], **headers)
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_token"


@pytest.mark.parametrize("route", ROUTES)
def test_a_user_without_a_wallet_answers_403_before_a_bad_query(api, busy, route):
    # given: a staff user (no wallet), and a cursor of someone else's history
    _, headers = busy
    cursor = _page(api, route, headers, limit=1)["next_cursor"]
    staff = User.objects.create_user(f"staff.{uuid.uuid4().hex[:6]}@example.com", "x" * 16, is_staff=True)
    staff_headers = auth_header(staff)
    # when / then
    for query in ({}, {"cursor": cursor}, {"limit": 0}, {"cursor": "forged"}):
        response = api.get(route, query, **staff_headers)
        assert response.status_code == 403, (query, response.content)
        assert response.json()["code"] == "forbidden"


def test_another_wallets_cursor_reads_nothing_of_it(api, busy):
    # given: Asha's cursor, sent by Bilal
    _, headers = busy
    cursor = _page(api, ROUTES[0], headers, limit=1)["next_cursor"]
    bilal, _ = register_user(name="Bilal")
    # when
    response = api.get(ROUTES[0], {"cursor": cursor}, **auth_header(bilal))
    # then
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_cursor"


@pytest.fixture
def skewed_ledger():
    """A ledger where two accounts hold nearly all entries, interleaved (as the benchmark's
    history wallet and its partner), and a small wallet with three; statistics analysed."""
    _, big = register_user(name="Big")
    _, partner = register_user(name="Partner")
    small_user, small = register_user(name="Small")
    fund(big, 10_000)
    fund(small, 10_000)
    commands = [
        PostingCommand(
            type="transfer",
            legs=(Leg(big.account_id, -1), Leg(partner.account_id, 1))
            if k % 2 == 0
            else (Leg(partner.account_id, -1), Leg(big.account_id, 1)),
        )
        for k in range(3000)
    ]
    with atomic():
        transactions_post(commands=commands)
    fund(small, 1)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return big, small, small_user


def _plan(user: User, *, after: Cursor | None, filters: HistoryFilter | None = None) -> str:
    filters = filters or HistoryFilter()
    session_start(user=user)
    family = TokenFamily.objects.filter(user=user, revoked_at__isnull=True).order_by("-created_at").first()
    sql = _page_sql(me=_ME_BY_LOGIN, limit=20, after=after, filters=filters)
    params = {**_page_params(after=after, filters=filters), "user_id": user.id, "family_id": family.id}
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def _assert_reads_one_account_range(plan: str, *, after: Cursor | None) -> None:
    """The page's entries (alias e) come from entry_account_history, the account in the
    index condition and, below a cursor, the entry bound too; never from the primary key,
    never from a whole-table scan."""
    lines = plan.splitlines()
    scan = next(i for i, line in enumerate(lines) if " on ledger_entry e " in line)
    condition = next(line for line in lines[scan + 1 :] if "Index Cond" in line)
    assert "entry_account_history" in lines[scan], plan
    assert "account_id" in condition, plan
    if after is not None:
        assert "id <" in condition, plan
    assert "ledger_entry_pkey on ledger_entry e " not in plan, plan
    assert "Seq Scan on ledger_entry" not in plan, plan


@pytest.mark.parametrize(
    "after",
    [None, Cursor(10**9), Cursor(10**9, timezone.now(), uuid.uuid4())],
    ids=["first page", "after an entry", "after a withdrawal"],
)
def test_a_page_reads_one_account_range_of_the_history_index(skewed_ledger, after):
    # given: statistics that make the big accounts look like most of the table, and the
    # primary key correlated with it: a plain `account_id = $1` walks the primary key
    # backwards, filtering by account, which on the small wallet reads the whole table
    big, _, small_user = skewed_ledger
    for user, filters in [
        (small_user, HistoryFilter()),
        (small_user, HistoryFilter(types=("transfer", "withdrawal"), direction="debit")),
        (big.user, HistoryFilter()),
    ]:
        # when
        plan = _plan(user, after=after, filters=filters)
        # then
        _assert_reads_one_account_range(plan, after=after)
    assert_ledger_consistent()


def test_the_withdrawals_keyset_is_an_index_condition(busy):
    # given
    wallet, _ = busy
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
    # when
    plan = _plan(wallet.user, after=Cursor(10**9, timezone.now(), uuid.uuid4()))
    # then: the partial index of unposted withdrawals, the whole key bounded in the index
    lines = plan.splitlines()
    scan = next(i for i, line in enumerate(lines) if " on wallets_withdrawal d " in line)
    assert "withdrawal_history" in lines[scan], plan
    condition = next(line for line in lines[scan + 1 :] if "Index Cond" in line)
    assert "wallet_id" in condition and "ROW(history_after_entry_id, created_at, id) <" in condition, plan


def _generic_plan(*, after: Cursor | None, filters: HistoryFilter) -> str:
    """The page statement's generic plan, the one it runs on (walletsite.db.prepared_cursor)."""
    return explain_generic_plan(_page_sql(me=_ME_BY_LOGIN, limit=20, after=after, filters=filters))


@pytest.mark.parametrize(
    "after",
    [None, Cursor(10**9), Cursor(10**9, timezone.now(), uuid.uuid4())],
    ids=["first page", "after an entry", "after a withdrawal"],
)
def test_the_generic_plan_reads_one_account_range_of_the_history_index(skewed_ledger, after):
    for filters in [HistoryFilter(), HistoryFilter(types=("transfer", "withdrawal"), direction="debit")]:
        # when
        plan = _generic_plan(after=after, filters=filters)
        # then: the ranges of the custom plans, whatever the values; the page's rows look
        # up their transactions by key, no whole ledger table is read
        _assert_reads_one_account_range(plan, after=after)
        assert "ledger_transaction_pkey on ledger_transaction t" in plan, plan
        assert "Seq Scan on ledger_transaction" not in plan, plan


def test_pages_run_prepared_on_generic_plans(api, busy):
    # given: pages read (the connection is set up by the first)
    _, headers = busy
    for _ in range(7):
        _page(api, ROUTES[0], headers, limit=2)
    # when
    with connection.cursor() as cursor:
        cursor.execute("SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement LIKE '%me AS%'")
        counts = cursor.fetchall()
    # then: one prepared statement, planned once, never per page
    assert len(counts) == 1, counts
    assert counts[0][0] >= 7 and counts[0][1] == 0, counts


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"limit": "20"},
        {"limit": "1"},
        {"limit": "100"},
        {"limit": "9"},
        {"cursor": "WzEsMl0:1v2Fxx:abcDEF-_"},
        {"limit": "5", "cursor": "x" * 512},
        {"limit": "5", "cursor": ".eJyLVjKsjQUAAr0BDw:1v2F:abc"},
    ],
)
def test_history_query_agrees_with_the_serializer_where_it_answers(params):
    from wallets.api_wallet import HistoryQuery, history_query

    query = HistoryQuery(data=params)
    assert query.is_valid(), query.errors
    assert history_query(params) == dict(query.validated_data)


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "101"},
        {"limit": "020"},
        {"limit": " 20"},
        {"limit": "20.0"},
        {"limit": "-1"},
        {"limit": ""},
        {"cursor": ""},
        {"cursor": " abc"},
        {"cursor": "x" * 513},
        {"cursor": "abc\x00"},
        {"limit": "20", "type": "transfer"},
        {"direction": "debit"},
        {"limit": "20", "extra": "1"},
    ],
)
def test_history_query_leaves_every_other_query_to_the_serializer(params):
    from wallets.api_wallet import history_query

    assert history_query(params) is None


def test_a_wallets_pages_read_by_wallet_are_those_read_by_login(api, busy):
    # given: the pages of two over the API (read by the login)
    from wallets.history import wallet_history

    wallet, headers = busy
    pages, cursor = [], None
    while True:
        page = _page(api, ROUTES[0], headers, limit=2, **({"cursor": cursor} if cursor else {}))
        pages.append(page)
        if not page["has_more"]:
            break
        cursor = page["next_cursor"]
    # when: the same pages read for the wallet (the path taken when the login's statement
    # found no wallet and the full check then did)
    again, cursor = [], None
    for _ in pages:
        page = wallet_history(wallet=wallet, limit=2, cursor=cursor, filters=HistoryFilter()).as_dict()
        again.append(page)
        cursor = page["next_cursor"]
    # then
    assert again == pages
