"""Wallet history: history items (API.md "A history item"), pages with opaque cursors."""

from __future__ import annotations

from dataclasses import dataclass

from django.core import signing

from ledger.models import Entry
from ledger.selectors import HistoryFilter, account_entries, transaction_entry_for_accounts
from wallets.models import Wallet
from walletsite.errors import InvalidCursor, TransactionNotFound

# A cursor is the last entry id of a page, bound to the wallet's account and signed with the
# service's secret: a client can neither forge one nor replay one against another wallet.
_CURSOR_SALT = "wallets.history.cursor.v1"
# A history item's status: posted entries now; pending and reversed holds come with withdrawals.
HISTORY_STATUSES = [("posted", "posted"), ("pending", "pending"), ("reversed", "reversed")]


@dataclass(frozen=True)
class Page:
    data: list[dict]
    has_more: bool
    next_cursor: str | None

    def as_dict(self) -> dict:
        return {"data": self.data, "has_more": self.has_more, "next_cursor": self.next_cursor}


def cursor_encode(*, account_id: int, entry_id: int) -> str:
    return signing.dumps([account_id, entry_id], salt=_CURSOR_SALT)


def cursor_decode(*, cursor: str, account_id: int) -> int:
    try:
        owner, entry_id = signing.loads(cursor, salt=_CURSOR_SALT)
    except (signing.BadSignature, ValueError, TypeError):
        raise InvalidCursor("The cursor is not one this service issued") from None
    if owner != account_id or type(entry_id) is not int:
        raise InvalidCursor("The cursor belongs to another listing")
    return entry_id


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


def wallet_history(*, wallet: Wallet, limit: int, cursor: str | None, filters: HistoryFilter) -> Page:
    before = cursor_decode(cursor=cursor, account_id=wallet.account_id) if cursor else None
    entries = account_entries(account_id=wallet.account_id, limit=limit + 1, before_entry_id=before, filters=filters)
    has_more = len(entries) > limit
    entries = entries[:limit]
    parties = _parties(entries)
    items = [history_item(e, currency=wallet.currency, parties=parties) for e in entries]
    next_cursor = cursor_encode(account_id=wallet.account_id, entry_id=entries[-1].id) if has_more else None
    return Page(items, has_more, next_cursor)


def wallet_transaction(*, wallet: Wallet, transaction_id) -> dict:
    """One history item, for a party to the transaction only; anyone else gets the same 404
    as for an id that does not exist."""
    entry = transaction_entry_for_accounts(transaction_id=transaction_id, account_ids=[wallet.account_id])
    if entry is None:
        raise TransactionNotFound("No transaction with this id has you as a party")
    return history_item(entry, currency=wallet.currency, parties=_parties([entry]))
