"""Wallet history: history items (API.md "A history item"), pages with opaque cursors.

Withdrawals in history ("pending, then posted or reversed"). A withdrawal's money is held,
not posted, until the bank answers, so until then it has no entry. History shows it anyway,
from the withdrawal row: type withdrawal, direction debit, status `pending` while it is
held, `reversed` once the hold was released (nothing left the wallet), and no item of its
own once posted: the posted entry (status `posted`, its id the ledger transaction's) takes
its place. Its place in the order is fixed when the hold is placed: right after the
account's newest entry at that moment (`Withdrawal.history_after_entry_id`, read under the
account's lock), so it never moves while held or after a release, and its balance_after is
the posted balance then (a hold does not change it).

Order and cursors. Every item has a sort key, newest first: an entry's is (entry id, 1); an
unposted withdrawal's is (history_after_entry_id, 2, created_at, id), which puts it after
the entry it followed and before the next entry. A page reads both sources with a keyset
below the cursor (one indexed query each: entry_account_history and withdrawal_history),
merges them and keeps `limit` items; the cursor is the last item's key. So a page costs the
same fixed number of queries however long the history is, and paging never skips or
repeats an item, also while withdrawals are placed or settled between pages (a posted
withdrawal shows as its entry, newer than any page already read).

GET /transactions/{id} answers a ledger transaction id as before, and also a withdrawal id:
its pending or reversed item, or once posted, the posted entry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.core import signing
from django.db.models import Q

from ledger.models import Entry
from ledger.selectors import HistoryFilter, account_entries, transaction_entry_for_accounts
from wallets.models import Wallet, Withdrawal
from walletsite.errors import InvalidCursor, TransactionNotFound

# A cursor is the sort key of a page's last item, bound to the wallet's account and signed
# with the service's secret: a client can neither forge one nor replay one against another
# wallet. After an entry: [account id, entry id]; after a withdrawal: [account id, its
# history position, its created_at, its id].
_CURSOR_SALT = "wallets.history.cursor.v1"
# A history item's status: posted entries; pending and reversed (released) withdrawals.
HISTORY_STATUSES = [("posted", "posted"), ("pending", "pending"), ("reversed", "reversed")]


@dataclass(frozen=True)
class Page:
    data: list[dict]
    has_more: bool
    next_cursor: str | None

    def as_dict(self) -> dict:
        return {"data": self.data, "has_more": self.has_more, "next_cursor": self.next_cursor}


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: after the entry `entry_id`, or after a withdrawal (position,
    created_at, id)."""

    position: int
    withdrawal_created_at: datetime | None = None
    withdrawal_id: uuid.UUID | None = None

    @property
    def after_withdrawal(self) -> bool:
        return self.withdrawal_id is not None


def cursor_encode(
    *, account_id: int, entry_id: int, withdrawal_created_at: datetime | None = None, withdrawal_id=None
) -> str:
    if withdrawal_id is None:
        return signing.dumps([account_id, entry_id], salt=_CURSOR_SALT)
    return signing.dumps(
        [account_id, entry_id, withdrawal_created_at.isoformat(), str(withdrawal_id)], salt=_CURSOR_SALT
    )


def cursor_decode(*, cursor: str, account_id: int) -> Cursor:
    try:
        value = signing.loads(cursor, salt=_CURSOR_SALT)
        owner, position, *rest = value
        if rest:
            created_iso, withdrawal_id = rest
            decoded = Cursor(position, datetime.fromisoformat(created_iso), uuid.UUID(withdrawal_id))
        else:
            decoded = Cursor(position)
    except (signing.BadSignature, ValueError, TypeError):
        raise InvalidCursor("The cursor is not one this service issued") from None
    if owner != account_id or type(position) is not int:
        raise InvalidCursor("The cursor belongs to another listing")
    return decoded


def _parties(entries: list[Entry]) -> dict[int, Wallet]:
    """The wallets on the other side of these entries, in one query."""
    ids = {e.counterparty_account_id for e in entries if e.counterparty_account_id is not None}
    if not ids:
        return {}
    return {w.account_id: w for w in Wallet.objects.filter(account_id__in=ids).select_related("user")}


def history_item(entry: Entry, *, currency: str, parties: dict[int, Wallet]) -> dict:
    other = parties.get(entry.counterparty_account_id)
    return {
        "id": str(entry.transaction_id),
        "type": entry.type,
        "direction": "credit" if entry.amount > 0 else "debit",
        "amount": abs(entry.amount),
        "currency": currency,
        "balance_after": entry.balance_after,
        "status": "posted",
        "counterparty": None
        if other is None
        else {"handle": other.handle, "name": other.user.business_name or other.user.name},
        "note": entry.transaction.note,
        "created_at": entry.created_at.isoformat().replace("+00:00", "Z"),
    }


def withdrawal_history_item(withdrawal: Withdrawal) -> dict:
    """A withdrawal that has no posted entry: pending while held, reversed once released."""
    return {
        "id": str(withdrawal.id),
        "type": "withdrawal",
        "direction": "debit",
        "amount": withdrawal.amount,
        "currency": withdrawal.currency,
        "balance_after": withdrawal.history_balance,
        "status": "reversed" if withdrawal.status == Withdrawal.Status.FAILED else "pending",
        "counterparty": None,
        "note": "",
        "created_at": withdrawal.created_at.isoformat().replace("+00:00", "Z"),
    }


def _unposted_withdrawals(*, wallet: Wallet, limit: int, cursor: Cursor | None, filters: HistoryFilter):
    """Up to `limit` of the wallet's withdrawals without a posted entry, newest first by
    history key, below the cursor; none when the filters exclude withdrawals."""
    if (filters.types and "withdrawal" not in filters.types) or filters.direction == "credit":
        return []
    query = Withdrawal.objects.filter(wallet=wallet).filter(~Q(status=Withdrawal.Status.SUCCEEDED))
    if cursor is not None:
        below = Q(history_after_entry_id__lt=cursor.position)
        if cursor.after_withdrawal:
            below |= Q(history_after_entry_id=cursor.position, created_at__lt=cursor.withdrawal_created_at)
            below |= Q(
                history_after_entry_id=cursor.position,
                created_at=cursor.withdrawal_created_at,
                id__lt=cursor.withdrawal_id,
            )
        query = query.filter(below)
    if filters.created_from is not None:
        query = query.filter(created_at__gte=filters.created_from)
    if filters.created_to is not None:
        query = query.filter(created_at__lt=filters.created_to)
    return list(query.order_by("-history_after_entry_id", "-created_at", "-id")[:limit])


def wallet_history(*, wallet: Wallet, limit: int, cursor: str | None, filters: HistoryFilter) -> Page:
    after = cursor_decode(cursor=cursor, account_id=wallet.account_id) if cursor else None
    # Entries below the cursor: after an entry E, those older than E; after a withdrawal
    # placed after entry P, entry P itself and older.
    before = None if after is None else after.position + (1 if after.after_withdrawal else 0)
    entries = account_entries(account_id=wallet.account_id, limit=limit + 1, before_entry_id=before, filters=filters)
    withdrawals = _unposted_withdrawals(wallet=wallet, limit=limit + 1, cursor=after, filters=filters)
    keyed = [((e.id, 1), e) for e in entries] + [
        ((w.history_after_entry_id, 2, w.created_at, w.id), w) for w in withdrawals
    ]
    keyed.sort(key=lambda pair: pair[0], reverse=True)
    has_more = len(keyed) > limit
    keyed = keyed[:limit]
    page_entries = [row for _, row in keyed if isinstance(row, Entry)]
    parties = _parties(page_entries)
    items = [
        history_item(row, currency=wallet.currency, parties=parties)
        if isinstance(row, Entry)
        else withdrawal_history_item(row)
        for _, row in keyed
    ]
    next_cursor = None
    if has_more:
        last = keyed[-1][1]
        if isinstance(last, Entry):
            next_cursor = cursor_encode(account_id=wallet.account_id, entry_id=last.id)
        else:
            next_cursor = cursor_encode(
                account_id=wallet.account_id,
                entry_id=last.history_after_entry_id,
                withdrawal_created_at=last.created_at,
                withdrawal_id=last.id,
            )
    return Page(items, has_more, next_cursor)


def wallet_transaction(*, wallet: Wallet, transaction_id) -> dict:
    """One history item, for a party to the transaction only; anyone else gets the same 404
    as for an id that does not exist. A withdrawal id answers the withdrawal's item."""
    entry = transaction_entry_for_accounts(transaction_id=transaction_id, account_ids=[wallet.account_id])
    if entry is None:
        withdrawal = Withdrawal.objects.filter(id=transaction_id, wallet=wallet).first()
        if withdrawal is None:
            raise TransactionNotFound("No transaction with this id has you as a party")
        if withdrawal.transaction_id is None:
            return withdrawal_history_item(withdrawal)
        entry = transaction_entry_for_accounts(
            transaction_id=withdrawal.transaction_id, account_ids=[wallet.account_id]
        )
    return history_item(entry, currency=wallet.currency, parties=_parties([entry]))
