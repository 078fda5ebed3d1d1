"""Reads of the ledger: an account's entries, newest first, for history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import OuterRef, QuerySet, Subquery
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


def account_entries(
    *, account_id: int, limit: int, before_entry_id: int | None = None, filters: HistoryFilter = HistoryFilter()
) -> list[Entry]:
    return list(
        account_entries_query(account_id=account_id, limit=limit, before_entry_id=before_entry_id, filters=filters)
    )


def account_entries_query(
    *, account_id: int, limit: int, before_entry_id: int | None = None, filters: HistoryFilter = HistoryFilter()
) -> QuerySet[Entry]:
    """Up to `limit` entries of one account, newest first, each with its transaction and
    `counterparty_account_id`: the customer account on the other side, if any.

    One query: the keyset (account_id, id < cursor) walks the entry_account_history index,
    so a page costs the same on the millionth entry as on the first; the counterparty is a
    correlated subquery that runs only for the rows of the page.
    """
    query = Entry.objects.filter(account_id=account_id)
    if before_entry_id is not None:
        query = query.filter(id__lt=before_entry_id)
    if filters.types:
        query = query.filter(type__in=filters.types)
    if filters.direction == "credit":
        query = query.filter(amount__gt=0)
    elif filters.direction == "debit":
        query = query.filter(amount__lt=0)
    if filters.created_from is not None:
        query = query.filter(created_at__gte=filters.created_from)
    if filters.created_to is not None:
        query = query.filter(created_at__lt=filters.created_to)
    return query.select_related("transaction").annotate(counterparty_account_id=_counterparty()).order_by("-id")[:limit]


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
