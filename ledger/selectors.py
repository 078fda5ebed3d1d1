"""Reads of the ledger: an account's entries, newest first, for history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import OuterRef, Subquery
from django.db.models.functions import Abs

from ledger.models import Account, Entry


@dataclass(frozen=True)
class HistoryFilter:
    types: tuple[str, ...] = ()
    # "credit" (amount > 0) or "debit" (amount < 0); None for both.
    direction: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None


def _counterparty() -> Subquery:
    """The customer account on the other side of the outer entry's transaction (the largest
    leg when there are several), or NULL when the other side is a system account only."""
    return Subquery(
        Entry.objects.filter(transaction_id=OuterRef("transaction_id"), account__kind=Account.Kind.CUSTOMER)
        .exclude(account_id=OuterRef("account_id"))
        .order_by(Abs("amount").desc(), "id")
        .values("account_id")[:1]
    )


def account_entries_sql(*, account: str, limit: int, before: bool, filters: HistoryFilter) -> str:
    """SQL of up to `limit` entries of one account, newest first: columns id,
    transaction_id, type, amount, balance_after, created_at, note (the transaction's) and
    counterparty_account_id (the customer account on the other side, as `_counterparty`).

    `account` is an SQL expression for the account id (a parameter, or a column of an outer
    query this is joined LATERAL to). The limit is part of the text, not a parameter: a
    generic plan (wallets.history runs it prepared) would otherwise assume a tenth of the
    account's rows and might hash-join whole tables. Parameters: %(before)s when `before` (only
    entries with a smaller id); %(types)s, %(created_from)s, %(created_to)s for the filters
    that are set.

    Fixed SQL, no ORM compile. The keyset (account_id, id < before) is the Index Cond of
    entry_account_history, so a page reads `limit` index entries however deep it is, on a
    small account as on a large one; the page is cut before anything is joined, so the
    transaction's note and the counterparty (one lookup by transaction_id each) are read for
    the page's rows only.
    """
    # `= ANY(ARRAY[...])` and the ORDER BY's leading account_id are what keep the plan on
    # the history index: with a plain `account_id = $1` (a parameter, or a column joined
    # LATERAL) the planner estimates the rows of an average account and may walk the primary
    # key backwards filtering by account, which on a small wallet's first page reads the
    # whole table (210 ms on the benchmark's 2M entries). An array is no equality for the
    # planner's pathkeys, so only entry_account_history gives (account_id, id DESC) order.
    conditions = [f"e.account_id = ANY(ARRAY[{account}]::bigint[])"]
    if before:
        conditions.append("e.id < %(before)s")
    if filters.types:
        conditions.append("e.type = ANY(%(types)s)")
    if filters.direction == "credit":
        conditions.append("e.amount > 0")
    elif filters.direction == "debit":
        conditions.append("e.amount < 0")
    if filters.created_from is not None:
        conditions.append("e.created_at >= %(created_from)s")
    if filters.created_to is not None:
        conditions.append("e.created_at < %(created_to)s")
    return _ENTRIES_PAGE_SQL.format(
        conditions=" AND ".join(conditions), limit=int(limit), customer=Account.Kind.CUSTOMER.value
    )


_ENTRIES_PAGE_SQL = """
SELECT page.id, page.transaction_id, page.type, page.amount, page.balance_after, page.created_at, t.note,
       party.account_id AS counterparty_account_id
FROM (
    SELECT e.id, e.account_id, e.transaction_id, e.type, e.amount, e.balance_after, e.created_at
    FROM ledger_entry e
    WHERE {conditions}
    ORDER BY e.account_id, e.id DESC
    LIMIT {limit}
) page
JOIN ledger_transaction t ON t.id = page.transaction_id
LEFT JOIN LATERAL (
    SELECT o.account_id
    FROM ledger_entry o JOIN ledger_account a ON a.id = o.account_id
    WHERE o.transaction_id = page.transaction_id AND o.account_id <> page.account_id AND a.kind = '{customer}'
    ORDER BY abs(o.amount) DESC, o.id
    LIMIT 1
) party ON true
"""


def transaction_entry_for_accounts(*, transaction_id, account_ids: list[int]) -> Entry | None:
    """The entry of this transaction on one of these accounts (the caller's side), with the
    same annotations as `account_entries`; None when none of them is a party."""
    return (
        Entry.objects.filter(transaction_id=transaction_id, account_id__in=account_ids)
        .select_related("transaction")
        .annotate(counterparty_account_id=_counterparty())
        .order_by("id")
        .first()
    )
