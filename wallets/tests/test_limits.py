"""Limits by KYC tier (wallets.limits): per transaction, daily, monthly, balance ceiling, and
their day and month boundaries. Transfers go through the API; the boundary tests call the
query with another `now`, because entries are stamped by the database clock and are never
updated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from accounts.models import Tier
from accounts.tiers import user_tier_change
from ledger.holds import hold_place
from ledger.models import AuditLog, Entry, Transaction
from ledger.posting import Leg, PostingCommand, atomic, system_account, transaction_post
from ledger.tests.invariants import assert_ledger_consistent
from wallets.limits import outgoing_limits_check, outgoing_totals
from wallets.models import IdempotencyKey
from wallets.tests.factories import auth_header, register_user
from wallets.tests.money import balance_of, fund, transfer
from walletsite.errors import LimitExceeded

pytestmark = pytest.mark.django_db


@pytest.fixture
def small_tier():
    """Limits small enough to reach in a few transfers."""
    return Tier.objects.create(
        code="small",
        name="Small",
        per_transaction_limit=400,
        daily_outgoing_limit=1_000,
        monthly_outgoing_limit=1_500,
        balance_ceiling=5_000,
    )


@pytest.fixture
def sender(small_tier):
    user, wallet = register_user()
    user_tier_change(user=user, tier=small_tier, actor=None, reason="test tier")
    fund(wallet, 10_000)
    return user, wallet, auth_header(user)


@pytest.fixture
def receiver():
    return register_user()[1]


def _db_now() -> datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def _snapshot():
    return Entry.objects.count(), Transaction.objects.count(), IdempotencyKey.objects.count()


def test_new_users_are_on_the_basic_tier_with_its_seeded_inr_limits():
    # given / when
    user, _ = register_user()
    # then
    assert user.tier_id == "basic"
    basic = Tier.objects.get(code="basic")
    assert (basic.per_transaction_limit, basic.daily_outgoing_limit) == (10_000_00, 20_000_00)
    assert (basic.monthly_outgoing_limit, basic.balance_ceiling) == (100_000_00, 100_000_00)
    assert Tier.objects.get(code="verified").daily_outgoing_limit > basic.daily_outgoing_limit


def test_basic_per_transaction_limit_through_the_api(api):
    # given
    user, wallet = register_user()
    fund(wallet, 15_000_00)
    other = register_user()[1]
    before = _snapshot()
    # when
    refused = transfer(api, auth_header(user), to=other.handle, amount=10_000_01)
    # then
    assert refused.status_code == 422
    body = refused.json()
    assert body["code"] == "limit_exceeded"
    assert body["limit"] == "per_transaction"
    assert "10,000.01 INR" in body["detail"] and "10,000.00 INR" in body["detail"]
    assert _snapshot()[:2] == before[:2]
    assert balance_of(wallet) == 15_000_00
    # and the limit itself is allowed
    assert transfer(api, auth_header(user), to=other.handle, amount=10_000_00).status_code == 201
    assert_ledger_consistent()


def test_daily_limit_counts_todays_transfers_and_names_itself(api, sender, receiver):
    # given: 400 + 400 sent today of a daily 1,000
    _, wallet, auth = sender
    assert transfer(api, auth, to=receiver.handle, amount=400).status_code == 201
    assert transfer(api, auth, to=receiver.handle, amount=400).status_code == 201
    before = _snapshot()
    # when
    refused = transfer(api, auth, to=receiver.handle, amount=201)
    # then
    assert refused.status_code == 422
    body = refused.json()
    assert (body["code"], body["limit"]) == ("limit_exceeded", "daily")
    assert "1,000 INR" not in body["detail"]  # amounts are in major units with two decimals
    assert "10.00 INR" in body["detail"] and "8.00 INR" in body["detail"] and "2.01 INR" in body["detail"]
    assert _snapshot()[:2] == before[:2]
    assert balance_of(wallet) == 10_000 - 800
    # exactly up to the limit is fine
    assert transfer(api, auth, to=receiver.handle, amount=200).status_code == 201
    assert_ledger_consistent()


def test_a_refused_transfer_stores_its_answer_and_a_replay_moves_nothing(api, sender, receiver):
    # given
    _, wallet, auth = sender
    first = transfer(api, auth, to=receiver.handle, amount=401, key="too-much")
    # when
    again = transfer(api, auth, to=receiver.handle, amount=401, key="too-much")
    # then
    assert first.status_code == again.status_code == 422
    assert again.json()["limit"] == "per_transaction"
    assert balance_of(wallet) == 10_000
    assert_ledger_consistent()


def test_only_outgoing_transfer_payment_and_withdrawal_debits_count(sender, receiver):
    # given: money received, a deposit and an adjustment debit: none of them is "sent"
    _, wallet, _ = sender
    with atomic():
        transaction_post(
            command=PostingCommand(
                type="adjustment",
                legs=(Leg(wallet.account_id, -300), Leg(system_account("adjustments").id, 300)),
            )
        )
        for kind in ("transfer", "payment", "withdrawal"):
            transaction_post(
                command=PostingCommand(type=kind, legs=(Leg(wallet.account_id, -100), Leg(receiver.account_id, 100)))
            )
        transaction_post(
            command=PostingCommand(type="transfer", legs=(Leg(receiver.account_id, -50), Leg(wallet.account_id, 50)))
        )
    # when
    totals = outgoing_totals(account_id=wallet.account_id)
    # then
    assert (totals.today, totals.this_month) == (300, 300)
    assert_ledger_consistent()


def test_pending_holds_count_as_sent(api, sender, receiver):
    # given: a pending hold (a withdrawal on its way) of 700
    _, wallet, auth = sender
    with atomic():
        hold_place(account_id=wallet.account_id, amount=700, reference="test:withdrawal")
    # when
    refused = transfer(api, auth, to=receiver.handle, amount=301)
    allowed = transfer(api, auth, to=receiver.handle, amount=300)
    # then
    assert refused.status_code == 422 and refused.json()["limit"] == "daily"
    assert allowed.status_code == 201
    assert_ledger_consistent()


def test_day_and_month_boundaries_of_the_totals(api, sender, receiver):
    # given: 700 sent now
    _, wallet, auth = sender
    assert transfer(api, auth, to=receiver.handle, amount=400).status_code == 201
    assert transfer(api, auth, to=receiver.handle, amount=300).status_code == 201
    now = _db_now().astimezone(UTC)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    tomorrow = day_start + timedelta(days=1)
    next_month = (day_start.replace(day=1) + timedelta(days=32)).replace(day=1)
    # when
    late_today = outgoing_totals(account_id=wallet.account_id, now=tomorrow - timedelta(microseconds=1))
    at_midnight = outgoing_totals(account_id=wallet.account_id, now=tomorrow)
    in_next_month = outgoing_totals(account_id=wallet.account_id, now=next_month)
    # then
    assert (late_today.today, late_today.this_month) == (700, 700)
    if tomorrow.month == now.month:
        assert (at_midnight.today, at_midnight.this_month) == (0, 700)
    else:
        assert (at_midnight.today, at_midnight.this_month) == (0, 0)
    assert (in_next_month.today, in_next_month.this_month) == (0, 0)
    assert_ledger_consistent()


def test_monthly_limit_applies_across_days(api, sender, receiver):
    # given: 1,000 sent today (the daily limit), seen from a later day of the same month
    _, wallet, auth = sender
    for amount in (400, 400, 200):
        assert transfer(api, auth, to=receiver.handle, amount=amount).status_code == 201
    later = datetime(2999, 1, 1, tzinfo=UTC)  # the query's month is that of `now`

    def check_at(when, amount):
        def check(accounts):
            outgoing_limits_check(wallet=wallet, amount=amount, accounts=accounts, now=when)

        with atomic():
            transaction_post(
                command=PostingCommand(
                    type="transfer",
                    legs=(Leg(wallet.account_id, -amount), Leg(receiver.account_id, amount)),
                    check=check,
                )
            )

    now = _db_now().astimezone(UTC)
    tomorrow = now + timedelta(days=1)
    # A later day of this month (none when the test runs on a month's last day).
    later_day = now.replace(day=28, hour=12) if now.day < 28 else tomorrow if tomorrow.month == now.month else None
    # when / then: a new day of the same month has a fresh daily allowance, not a fresh month
    if later_day is not None:
        check_at(later_day, 400)
        with pytest.raises(LimitExceeded) as refused:
            check_at(later_day, 101)
        assert refused.value.extra == {"limit": "monthly"}
        check_at(later_day, 100)
        with pytest.raises(LimitExceeded) as refused:
            check_at(later_day, 1)
        assert refused.value.extra == {"limit": "monthly"}
    # and another month starts from zero
    check_at(later, 400)
    assert_ledger_consistent()


def test_balance_ceiling_of_the_receiver(api, sender, small_tier):
    # given: a receiver on the small tier (ceiling 5,000) who holds 4,800
    _, wallet, auth = sender
    r_user, r_wallet = register_user()
    user_tier_change(user=r_user, tier=small_tier, actor=None, reason="test tier")
    fund(r_wallet, 4_800)
    before = _snapshot()
    # when
    refused = transfer(api, auth, to=r_wallet.handle, amount=201)
    # then
    assert refused.status_code == 422
    body = refused.json()
    assert (body["code"], body["limit"]) == ("limit_exceeded", "balance_ceiling")
    # The sender learns the amount, not what the receiver holds.
    assert "48.00" not in body["detail"] and "50.00" not in body["detail"]
    assert _snapshot()[:2] == before[:2]
    assert (balance_of(wallet), balance_of(r_wallet)) == (10_000, 4_800)
    assert transfer(api, auth, to=r_wallet.handle, amount=200).status_code == 201
    assert balance_of(r_wallet) == 5_000
    assert_ledger_consistent()


def test_a_tier_change_applies_to_the_next_transfer_and_is_audited(api, sender, receiver, small_tier):
    # given
    user, _, auth = sender
    staff = register_user()[0]
    assert transfer(api, auth, to=receiver.handle, amount=401).status_code == 422
    # when
    user_tier_change(user=user, tier=Tier.objects.get(code="verified"), actor=staff, reason="KYC documents checked")
    # then
    assert transfer(api, auth, to=receiver.handle, amount=401).status_code == 201
    log = AuditLog.objects.filter(action="user.tier_changed", target=f"user:{user.id}").latest("id")
    assert (log.actor_id, log.actor_label, log.reason) == (staff.id, staff.email, "KYC documents checked")
    assert log.data == {"from": "small", "to": "verified", "email": user.email}
    assert_ledger_consistent()


def test_a_tier_change_needs_a_reason_and_a_no_op_records_nothing(sender, small_tier):
    # given
    user, _, _ = sender
    count = AuditLog.objects.count()
    # when / then
    with pytest.raises(ValueError):
        user_tier_change(user=user, tier=Tier.objects.get(code="basic"), actor=None, reason="  ")
    user_tier_change(user=user, tier=small_tier, actor=None, reason="already there")
    user.refresh_from_db()
    assert user.tier_id == "small"
    assert AuditLog.objects.count() == count


def test_the_outgoing_query_reads_one_account_range_of_the_history_index(sender):
    # given: the planner pushed away from sequential scans, as it is on a large table
    _, wallet, _ = sender
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        from wallets.limits import _OUTGOING_SQL, BOUND_MARGIN, OUTGOING_TYPES

        # when
        cursor.execute(
            "EXPLAIN " + _OUTGOING_SQL,
            {"account_ids": [wallet.account_id], "now": None, "margin": BOUND_MARGIN, "types": list(OUTGOING_TYPES)},
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())
    # then: the entries come from (account_id, id) with both bounds in the index condition,
    # and the bound from the transactions' created_at index
    assert "entry_account_history" in plan, plan
    assert "ledger_txn_created" in plan, plan
    lines = plan.splitlines()
    scan = next(i for i, line in enumerate(lines) if "entry_account_history on ledger_entry e " in line)
    condition = next(line for line in lines[scan + 1 :] if "Index Cond" in line)
    assert "account_id" in condition and "id >" in condition, plan
    assert_ledger_consistent()
