"""Reconciliation and balance recompute, against a real ledger broken on purpose with raw SQL
(the database's own rules are lifted inside the test's transaction where a break needs it)."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection, transaction
from prometheus_client import REGISTRY

from ledger import reconciliation
from ledger.models import Account, AuditLog, Entry
from ledger.posting import Leg, PostingCommand, account_open, system_account, transaction_post
from ledger.reconciliation import balances_recompute, reconciliation_run

pytestmark = pytest.mark.django_db


def funded_account(amount: int = 1000) -> Account:
    """A customer account with one deposit of `amount` from gateway clearing."""
    account = account_open(currency="INR")
    with transaction.atomic():
        transaction_post(
            command=PostingCommand(
                type="deposit",
                legs=[Leg(system_account("gateway_clearing").id, -amount), Leg(account.id, amount)],
            )
        )
    return account


def sql(statement: str, params=()) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def drift(account: Account, by: int) -> None:
    """Move a cached balance away from its entries, as a bug or a hand edit would."""
    sql("UPDATE ledger_account SET balance = balance + %s WHERE id = %s", [by, account.id])


def kinds(run) -> list[str]:
    return sorted(m["kind"] for m in run.mismatches)


def test_a_consistent_ledger_reconciles():
    # given
    first, second = funded_account(1000), funded_account(250)
    with transaction.atomic():
        transaction_post(command=PostingCommand(type="transfer", legs=[Leg(first.id, -300), Leg(second.id, 300)]))
    # when
    run = reconciliation_run(triggered_by="test")
    # then
    assert run.ok is True
    assert run.mismatches == []
    assert run.checked_accounts == Account.objects.count()
    assert run.checked_transactions == 3
    assert run.total_balance == 0
    assert run.triggered_by == "test"
    assert run.pk is not None and run.finished_at >= run.started_at


def test_drifted_balance_is_reported_against_entries_and_balance_after():
    # given
    account = funded_account(1000)
    drift(account, 5)
    # when
    run = reconciliation_run(triggered_by="test")
    # then
    assert run.ok is False
    assert kinds(run) == ["balance_not_last_balance_after", "balance_not_sum_of_entries", "balances_total_not_zero"]
    by_kind = {m["kind"]: m for m in run.mismatches}
    assert by_kind["balance_not_sum_of_entries"] | {"detail": None} == {
        "kind": "balance_not_sum_of_entries",
        "account_id": account.id,
        "account": f"account {account.id}",
        "expected": 1000,
        "actual": 1005,
        "detail": None,
    }
    assert by_kind["balance_not_last_balance_after"]["expected"] == 1000
    assert by_kind["balances_total_not_zero"]["actual"] == 5
    assert run.total_balance == 5


def test_account_without_entries_but_with_a_balance_is_reported():
    # given: an account that never had an entry claims money
    account = account_open(currency="INR")
    other = funded_account(10)
    drift(account, 7)
    drift(other, -7)  # the total stays zero: only the per-account checks can see it
    # when
    run = reconciliation_run(triggered_by="test")
    # then
    found = {(m["kind"], m.get("account_id")) for m in run.mismatches}
    assert ("balance_not_sum_of_entries", account.id) in found
    assert ("balance_not_last_balance_after", account.id) in found
    assert ("balance_not_sum_of_entries", other.id) in found
    assert not any(m["kind"] == "balances_total_not_zero" for m in run.mismatches)


def test_transaction_without_entries_is_reported():
    # given
    funded_account()
    txn = uuid.uuid4()
    sql("INSERT INTO ledger_transaction (id, type, note, reference) VALUES (%s, 'adjustment', '', '')", [txn])
    # when
    run = reconciliation_run(triggered_by="test")
    # then
    assert run.mismatches == [
        {
            "kind": "transaction_without_entries",
            "transaction_id": str(txn),
            "expected": 2,
            "actual": 0,
            "detail": "a ledger transaction with no entries",
        }
    ]


def test_unbalanced_and_one_legged_transactions_are_reported():
    # given: the balance trigger lifted inside this test's transaction (rolled back after;
    # before any insert, as PostgreSQL alters no table with pending foreign-key checks)
    sql("ALTER TABLE ledger_entry DISABLE TRIGGER entry_transactions_balance")
    account = funded_account(1000)
    unbalanced, one_leg = uuid.uuid4(), uuid.uuid4()
    for txn in (unbalanced, one_leg):
        sql("INSERT INTO ledger_transaction (id, type, note, reference) VALUES (%s, 'adjustment', '', '')", [txn])
    sql(
        "INSERT INTO ledger_entry (transaction_id, account_id, amount, balance_after, type) VALUES "
        "(%s, %s, 5, 1005, 'adjustment'), (%s, %s, -4, -4, 'adjustment'), (%s, %s, 3, 1008, 'adjustment')",
        [unbalanced, account.id, unbalanced, system_account("adjustments").id, one_leg, account.id],
    )
    # when
    run = reconciliation_run(triggered_by="test")
    # then
    by_txn = {(m["kind"], m.get("transaction_id")): m for m in run.mismatches}
    assert by_txn[("transaction_unbalanced", str(unbalanced))]["actual"] == 1
    assert by_txn[("transaction_too_few_legs", str(one_leg))]["actual"] == 1
    assert by_txn[("transaction_unbalanced", str(one_leg))]["actual"] == 3
    assert by_txn[("entries_total_not_zero", None)]["actual"] == 4
    # The cached balance was not moved by the raw entries, so it disagrees with them too.
    assert any(m["kind"] == "balance_not_sum_of_entries" and m["account_id"] == account.id for m in run.mismatches)


def test_negative_customer_and_held_balances_are_reported():
    # given: the CHECK constraints lifted inside this test's transaction
    for name in ("customer_balance_not_negative", "held_not_negative", "customer_available_not_negative"):
        sql(f"ALTER TABLE ledger_account DROP CONSTRAINT {name}")
    negative, held = funded_account(100), funded_account(100)
    sql("UPDATE ledger_account SET held_balance = -1 WHERE id = %s", [held.id])
    drift(negative, -150)
    overheld = funded_account(100)
    sql("UPDATE ledger_account SET held_balance = 150 WHERE id = %s", [overheld.id])
    # when
    run = reconciliation_run(triggered_by="test")
    # then
    found = {(m["kind"], m.get("account_id")) for m in run.mismatches}
    assert ("customer_balance_negative", negative.id) in found
    assert ("held_balance_negative", held.id) in found
    assert ("customer_available_negative", overheld.id) in found


def test_system_accounts_may_be_negative():
    # given: gateway clearing is negative by design after a deposit
    funded_account(1000)
    # when
    run = reconciliation_run(triggered_by="test")
    # then
    assert system_account("gateway_clearing").balance == -1000
    assert run.ok


def test_mismatches_are_capped_per_kind_but_all_counted(monkeypatch):
    # given
    monkeypatch.setattr(reconciliation, "MAX_LISTED_PER_KIND", 2)
    accounts = [funded_account(10) for _ in range(4)]
    for account in accounts:
        drift(account, 1)
    # when
    run = reconciliation_run(triggered_by="test")
    # then
    listed = [m for m in run.mismatches if m["kind"] == "balance_not_sum_of_entries"]
    assert len(listed) == 2
    more = [m for m in run.mismatches if m["kind"] == "more_not_listed"]
    assert {(m["of_kind"], m["actual"]) for m in more} == {
        ("balance_not_sum_of_entries", 2),
        ("balance_not_last_balance_after", 2),
    }
    assert REGISTRY.get_sample_value("wallet_reconciliation_mismatches") == 9  # 4 + 4 + total


def test_metrics_count_runs_by_result():
    # given
    before_ok = REGISTRY.get_sample_value("wallet_reconciliation_runs_total", {"result": "ok"}) or 0
    before_bad = REGISTRY.get_sample_value("wallet_reconciliation_runs_total", {"result": "mismatch"}) or 0
    account = funded_account()
    # when
    reconciliation_run(triggered_by="test")
    drift(account, 1)
    reconciliation_run(triggered_by="test")
    # then
    assert REGISTRY.get_sample_value("wallet_reconciliation_runs_total", {"result": "ok"}) == before_ok + 1
    assert REGISTRY.get_sample_value("wallet_reconciliation_runs_total", {"result": "mismatch"}) == before_bad + 1
    assert REGISTRY.get_sample_value("wallet_reconciliation_mismatches") == 3


@pytest.mark.parametrize("accounts", [2, 40])
def test_reconciliation_runs_a_fixed_number_of_queries(accounts, django_assert_max_num_queries):
    # given
    for _ in range(accounts):
        drift(funded_account(10), 1)
    # when / then: the same statements whatever the number of accounts or mismatches
    with django_assert_max_num_queries(10):
        run = reconciliation_run(triggered_by="test")
    assert len(run.mismatches) == 2 * accounts + 1


def test_reconciliation_gives_a_callers_transaction_its_planner_back():
    # given
    funded_account()
    # when
    reconciliation_run(triggered_by="test")
    # then
    with connection.cursor() as cursor:
        cursor.execute("SHOW enable_indexscan")
        assert cursor.fetchone() == ("on",)


def test_recompute_dry_run_reports_drift_and_writes_nothing():
    # given
    drifted, fine = funded_account(1000), funded_account(500)
    drift(drifted, -40)
    # when
    drifts = balances_recompute(fix=False, actor=None, actor_label="test")
    # then
    assert drifts == [
        {
            "account_id": drifted.id,
            "account": f"account {drifted.id}",
            "kind": "customer",
            "cached": 960,
            "entries": 1000,
            "difference": -40,
            "fixed": False,
        }
    ]
    drifted.refresh_from_db()
    fine.refresh_from_db()
    assert (drifted.balance, fine.balance) == (960, 500)
    assert not AuditLog.objects.exists()


def test_recompute_fix_sets_balances_to_their_entries_and_audits(django_user_model):
    # given
    staff = django_user_model.objects.create_user("ops@example.com", "x" * 12, is_staff=True)
    first, second = funded_account(1000), funded_account(500)
    drift(first, 25)
    drift(system_account("gateway_clearing"), -3)
    entries_before = list(Entry.objects.order_by("id").values_list("id", "account_id", "amount", "balance_after"))
    # when
    drifts = balances_recompute(fix=True, actor=staff, actor_label=staff.email, reason="bug #12 drift")
    # then
    assert {(d["account"], d["cached"], d["entries"], d["fixed"]) for d in drifts} == {
        (f"account {first.id}", 1025, 1000, True),
        ("gateway_clearing", -1503, -1500, True),
    }
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.balance, second.balance) == (1000, 500)
    audits = AuditLog.objects.order_by("target")
    assert [(a.action, a.target, a.actor_id, a.actor_label, a.reason, a.data) for a in audits] == sorted(
        [
            (
                "ledger.balance_recompute",
                f"account:{first.id}",
                staff.id,
                staff.email,
                "bug #12 drift",
                {"old": 1025, "new": 1000},
            ),
            (
                "ledger.balance_recompute",
                f"account:{system_account('gateway_clearing').id}",
                staff.id,
                staff.email,
                "bug #12 drift",
                {"old": -1503, "new": -1500},
            ),
        ],
        key=lambda row: row[1],
    )
    assert (
        list(Entry.objects.order_by("id").values_list("id", "account_id", "amount", "balance_after")) == entries_before
    )
    assert reconciliation_run(triggered_by="test").ok


def test_recompute_fix_needs_a_reason():
    with pytest.raises(ValueError, match="reason"):
        balances_recompute(fix=True, actor=None, actor_label="test", reason="  ")


def test_recompute_works_in_chunks_and_reports_progress(monkeypatch, django_assert_max_num_queries):
    # given: five customer accounts plus the system accounts, two accounts per chunk
    monkeypatch.setattr(reconciliation, "RECOMPUTE_CHUNK", 2)
    accounts = [funded_account(10) for _ in range(5)]
    drift(accounts[-1], 1)
    total = Account.objects.count()
    calls = []
    # when
    drifts = balances_recompute(fix=False, actor=None, actor_label="test", progress=lambda *a: calls.append(a))
    # then
    assert [d["account_id"] for d in drifts] == [accounts[-1].id]
    assert calls[-1] == (total, total)
    assert [done for done, _ in calls] == sorted({min(2 * i, total) for i in range(1, (total + 1) // 2 + 1)})
