"""Reconciliation: does the ledger still agree with itself?

`reconciliation_run` checks every invariant of the ledger with a few whole-table SQL
statements (never a query per account), inside one REPEATABLE READ snapshot so that a
posting that commits while it runs cannot show up in one statement and not in another:

- every ledger transaction has at least two entries and they sum to zero;
- every account's cached balance equals the sum of its entries and its latest entry's
  `balance_after`;
- customer balances, held amounts and customer available balances are not negative;
- all entries sum to zero, and the balances of each currency sum to zero.

`balances_recompute` rebuilds cached balances from the entries (the entries are the truth),
in chunks of accounts, for the `recompute_balances` command.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.utils import timezone

from ledger.audit import audit_record
from ledger.models import ReconciliationRun
from ledger.posting import accounts_lock, atomic
from walletsite import metrics

logger = logging.getLogger("ledger.reconciliation")

# At most this many mismatches of one kind are listed in a run (all are counted): a ledger
# broken everywhere must not turn the run's row into a JSON document of millions of items.
MAX_LISTED_PER_KIND = 500

# Accounts per chunk of `balances_recompute`: one statement and, with fix, one short durable
# transaction holding at most this many account locks.
RECOMPUTE_CHUNK = 1000

_TRANSACTIONS_SQL = """
WITH legs AS (
    SELECT transaction_id, sum(amount) AS total, count(*) AS legs
      FROM ledger_entry
     GROUP BY transaction_id
)
SELECT t.id, coalesce(l.total, 0), coalesce(l.legs, 0)
  FROM ledger_transaction t
  LEFT JOIN legs l ON l.transaction_id = t.id
 WHERE l.transaction_id IS NULL OR l.total <> 0 OR l.legs < 2
 ORDER BY t.id
"""

# The latest entry's balance_after comes from the same pass as the sum: the greatest
# (id, balance_after) pair per account, instead of a second look-up per account.
_ACCOUNTS_SQL = """
WITH sums AS (
    SELECT account_id, sum(amount) AS total, (max(ARRAY[id, balance_after]))[2] AS last_after
      FROM ledger_entry
     GROUP BY account_id
), holds AS (
    SELECT account_id, sum(amount) AS pending FROM ledger_hold WHERE status = 'pending' GROUP BY account_id
)
SELECT a.id, a.kind, a.code, a.balance, a.held_balance, coalesce(s.total, 0), coalesce(s.last_after, 0),
       coalesce(h.pending, 0)
  FROM ledger_account a
  LEFT JOIN sums s ON s.account_id = a.id
  LEFT JOIN holds h ON h.account_id = a.id
 WHERE a.balance <> coalesce(s.total, 0)
    OR a.balance <> coalesce(s.last_after, 0)
    OR a.held_balance <> coalesce(h.pending, 0)
    OR a.held_balance < 0
    OR (a.kind = 'customer' AND (a.balance < 0 OR a.balance < a.held_balance))
 ORDER BY a.id
"""

_TOTALS_SQL = """
SELECT (SELECT count(*) FROM ledger_account),
       (SELECT coalesce(sum(balance), 0) FROM ledger_account),
       (SELECT count(*) FROM ledger_transaction),
       (SELECT coalesce(sum(amount), 0) FROM ledger_entry)
"""

_CURRENCY_TOTALS_SQL = """
SELECT currency, sum(balance) FROM ledger_account GROUP BY currency HAVING sum(balance) <> 0 ORDER BY currency
"""


class _Findings:
    """Mismatches collected by kind: all counted, at most MAX_LISTED_PER_KIND listed."""

    def __init__(self) -> None:
        self.listed: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}

    def add(self, kind: str, **fields: Any) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self.counts[kind] <= MAX_LISTED_PER_KIND:
            self.listed.append({"kind": kind, **fields})

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_list(self) -> list[dict[str, Any]]:
        omitted = [
            {
                "kind": "more_not_listed",
                "of_kind": kind,
                "expected": 0,
                "actual": count - MAX_LISTED_PER_KIND,
                "detail": f"{count - MAX_LISTED_PER_KIND} more {kind} mismatches were counted but not listed",
            }
            for kind, count in sorted(self.counts.items())
            if count > MAX_LISTED_PER_KIND
        ]
        return self.listed + omitted


@contextmanager
def _snapshot(using: str):
    """One consistent view of the ledger for several statements. Inside a caller's atomic
    block (tests) the caller's transaction already is that view; SET TRANSACTION must be the
    first statement of a transaction, so it is only issued for a transaction of our own.

    Index scans are turned off for these statements: each reads whole tables, and walking
    the entries in transaction-id order (random UUIDs) through an index reads the heap at
    random. On 1M transactions (2M entries) the planner picked that walk and took 5.8 s; a
    sequential scan with a hash aggregate took 1.7 s, even when the hash spills at 4 MB of
    work_mem.
    """
    db = connections[using]
    nested = db.in_atomic_block
    with transaction.atomic(using=using), db.cursor() as cursor:
        if not nested:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cursor.execute("SELECT current_setting('enable_indexscan'), set_config('enable_indexscan', 'off', true)")
        (previous, _) = cursor.fetchone()
        yield
        if nested:
            # The caller's transaction goes on: give it its planner back. (After an error
            # the rollback to the savepoint restores the setting by itself.)
            cursor.execute("SELECT set_config('enable_indexscan', %s, true)", [previous])


def _check_transactions(cursor, findings: _Findings) -> None:
    cursor.execute(_TRANSACTIONS_SQL)
    for txn_id, total, legs in cursor.fetchall():
        total, legs = int(total), int(legs)
        if legs == 0:
            findings.add(
                "transaction_without_entries",
                transaction_id=str(txn_id),
                expected=2,
                actual=0,
                detail="a ledger transaction with no entries",
            )
            continue
        if legs < 2:
            findings.add(
                "transaction_too_few_legs",
                transaction_id=str(txn_id),
                expected=2,
                actual=legs,
                detail=f"{legs} entry; a ledger transaction needs at least 2",
            )
        if total != 0:
            findings.add(
                "transaction_unbalanced",
                transaction_id=str(txn_id),
                expected=0,
                actual=total,
                detail=f"its entries sum to {total}",
            )


def _check_accounts(cursor, findings: _Findings) -> None:
    cursor.execute(_ACCOUNTS_SQL)
    for account_id, kind, code, balance, held, total, last_after, pending in cursor.fetchall():
        total, last_after, pending = int(total), int(last_after), int(pending)
        label = {"account_id": account_id, "account": code or f"account {account_id}"}
        if balance != total:
            findings.add(
                "balance_not_sum_of_entries",
                **label,
                expected=total,
                actual=balance,
                detail=f"cached balance {balance}, entries sum to {total}",
            )
        if balance != last_after:
            findings.add(
                "balance_not_last_balance_after",
                **label,
                expected=last_after,
                actual=balance,
                detail=f"cached balance {balance}, latest entry's balance_after {last_after}",
            )
        if kind == "customer" and balance < 0:
            findings.add(
                "customer_balance_negative", **label, expected=0, actual=balance, detail="a customer balance below 0"
            )
        if held != pending:
            findings.add(
                "held_not_sum_of_pending_holds",
                **label,
                expected=pending,
                actual=held,
                detail=f"held {held}, pending holds sum to {pending}",
            )
        if held < 0:
            findings.add("held_balance_negative", **label, expected=0, actual=held, detail="a held amount below 0")
        if kind == "customer" and balance >= 0 and held >= 0 and balance < held:
            findings.add(
                "customer_available_negative",
                **label,
                expected=held,
                actual=balance,
                detail=f"held {held} exceeds the balance {balance}",
            )


def _check_totals(cursor, findings: _Findings) -> tuple[int, int, int]:
    """(accounts, transactions, sum of all balances), after checking the sums are zero."""
    cursor.execute(_TOTALS_SQL)
    accounts, total_balance, transactions, entries_total = (int(v) for v in cursor.fetchone())
    if entries_total != 0:
        findings.add(
            "entries_total_not_zero", expected=0, actual=entries_total, detail=f"all entries sum to {entries_total}"
        )
    cursor.execute(_CURRENCY_TOTALS_SQL)
    for currency, total in cursor.fetchall():
        findings.add(
            "balances_total_not_zero",
            currency=currency,
            expected=0,
            actual=int(total),
            detail=f"the {currency} balances sum to {int(total)}",
        )
    return accounts, transactions, total_balance


def reconciliation_run(*, triggered_by: str, using: str = DEFAULT_DB_ALIAS) -> ReconciliationRun:
    """Check every invariant of the ledger, store the result as a ReconciliationRun and
    return it (`ok` is False when anything disagrees; `mismatches` lists what).

    `using` names another connection alias to check a different database, such as a restored
    backup (ledger.backup); the run is stored there, and the metrics, which describe the
    service's own ledger, are left alone."""
    started_at = timezone.now()
    findings = _Findings()
    with _snapshot(using), connections[using].cursor() as cursor:
        _check_transactions(cursor, findings)
        _check_accounts(cursor, findings)
        accounts, transactions, total_balance = _check_totals(cursor, findings)
    run = ReconciliationRun.objects.using(using).create(
        started_at=started_at,
        finished_at=timezone.now(),
        ok=findings.total == 0,
        checked_accounts=accounts,
        checked_transactions=transactions,
        total_balance=total_balance,
        mismatches=findings.as_list(),
        triggered_by=triggered_by[:255],
    )
    if using == DEFAULT_DB_ALIAS:
        metrics.RECONCILIATION_MISMATCHES.set(findings.total)
        metrics.RECONCILIATION_RUNS.labels("ok" if run.ok else "mismatch").inc()
    log = logger.info if run.ok else logger.error
    log(
        "reconciliation finished",
        extra={
            "run_id": run.id,
            "ok": run.ok,
            "mismatches": findings.total,
            "accounts": accounts,
            "database": connections[using].settings_dict["NAME"],
        },
    )
    return run


# One chunk of accounts with the sum of each one's entries; the correlated sum walks the
# (account_id, -id) index of that account only.
_CHUNK_SQL = """
SELECT a.id, a.kind, a.code, a.balance,
       coalesce((SELECT sum(e.amount) FROM ledger_entry e WHERE e.account_id = a.id), 0)
  FROM ledger_account a
 WHERE a.id > %s
 ORDER BY a.id
 LIMIT %s
"""

_SUMS_SQL = """
SELECT a.id, a.balance, coalesce((SELECT sum(e.amount) FROM ledger_entry e WHERE e.account_id = a.id), 0)
  FROM ledger_account a
 WHERE a.id = ANY(%s)
 ORDER BY a.id
"""


def _drift(account_id: int, kind: str, code: str | None, cached: int, entries: int) -> dict[str, Any]:
    return {
        "account_id": account_id,
        "account": code or f"account {account_id}",
        "kind": kind,
        "cached": cached,
        "entries": entries,
        "difference": cached - entries,
        "fixed": False,
    }


def _fix(drifted: list[dict[str, Any]], *, actor, actor_label: str, reason: str) -> None:
    """Set each drifted account's balance to the sum of its entries, under its lock.

    This is the ONE place where a balance is written other than by increment in
    ledger.posting: the entries are the truth and the cached balance has drifted from them,
    so the cached value is replaced by their sum. No entry is written or changed. The sum is
    taken again under the lock, so a posting that committed since the dry read is counted.
    """
    by_id = {d["account_id"]: d for d in drifted}
    with atomic():
        accounts_lock(account_ids=by_id)
        with connection.cursor() as cursor:
            cursor.execute(_SUMS_SQL, [list(by_id)])
            rows = [(account_id, old, int(new)) for account_id, old, new in cursor.fetchall() if old != int(new)]
            if rows:
                ids, news = [r[0] for r in rows], [r[2] for r in rows]
                cursor.execute(
                    "UPDATE ledger_account AS a SET balance = f.balance "
                    "FROM unnest(%s::bigint[], %s::bigint[]) AS f(id, balance) WHERE a.id = f.id",
                    [ids, news],
                )
        for account_id, old, new in rows:
            audit_record(
                actor=actor,
                actor_label=actor_label,
                action="ledger.balance_recompute",
                target=f"account:{account_id}",
                reason=reason,
                data={"old": old, "new": new},
            )
            by_id[account_id].update(cached=old, entries=new, difference=old - new, fixed=True)


def balances_recompute(
    *,
    fix: bool,
    actor=None,
    actor_label: str,
    reason: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Every account whose cached balance differs from the sum of its entries, as drift
    dicts ({account_id, account, kind, cached, entries, difference, fixed}).

    With fix=True each drifted account is set to the sum of its entries and audited (who,
    why, old and new). Works through the accounts in chunks of RECOMPUTE_CHUNK; `progress`
    is called with (accounts done, accounts in all) after each chunk.
    """
    if fix and not (reason or "").strip():
        raise ValueError("fixing balances needs a reason")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM ledger_account")
        (total,) = cursor.fetchone()
    drifts: list[dict[str, Any]] = []
    done, after = 0, 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(_CHUNK_SQL, [after, RECOMPUTE_CHUNK])
            rows = cursor.fetchall()
        if not rows:
            break
        chunk = [_drift(r[0], r[1], r[2], r[3], int(r[4])) for r in rows if r[3] != int(r[4])]
        if fix and chunk:
            _fix(chunk, actor=actor, actor_label=actor_label, reason=reason)
            # A drift that was gone by the time the account was locked needed no fix.
            chunk = [d for d in chunk if d["fixed"]]
        drifts += chunk
        after = rows[-1][0]
        done += len(rows)
        if progress is not None:
            progress(min(done, total), max(total, done))
    return drifts


__all__ = ["balances_recompute", "reconciliation_run"]
