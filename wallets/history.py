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
below the cursor (one index range each: entry_account_history and withdrawal_history, in
one statement with the login's check and the counterparties: `_PAGE_SQL`), merges them and
keeps `limit` items; the cursor is the last item's key. So a page is one statement however
long the history is, and paging never skips or repeats an item, also while withdrawals are
placed or settled between pages (a posted withdrawal shows as its entry, newer than any
page already read).

GET /transactions/{id} answers a ledger transaction id as before, and also a withdrawal id:
its pending or reversed item, or once posted, the posted entry.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.core import signing

from ledger.models import Entry
from ledger.selectors import HistoryFilter, account_entries_sql, transaction_entry_for_accounts
from wallets.models import Wallet, Withdrawal
from walletsite.db import Int8, prepared_cursor
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


def cursor_parse(cursor: str) -> tuple[object, Cursor]:
    """The cursor's owner (the account id it was issued for) and position; checks the
    signature only. `cursor_decode` also checks the owner."""
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
    if type(position) is not int:
        raise InvalidCursor("The cursor belongs to another listing")
    return owner, decoded


def _cursor_owned(owner: object, account_id: int) -> None:
    if owner != account_id:
        raise InvalidCursor("The cursor belongs to another listing")


def cursor_decode(*, cursor: str, account_id: int) -> Cursor:
    owner, decoded = cursor_parse(cursor)
    _cursor_owned(owner, account_id)
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


# One page in one statement: the caller's wallet (`me`: one row, or none), the page's
# entries with their transactions' notes and counterparties' wallets and users, and the
# wallet's unposted withdrawals below the cursor. Rows: kind 0 is `me` (account_id,
# wallet_id, currency), kind 1 an entry, kind 2 a withdrawal (its amount negated: a
# debit). {me} is `_ME_BY_LOGIN` or `_ME_BY_WALLET`; {entries} is
# ledger.selectors.account_entries_sql joined LATERAL to `me`. The SQL is fixed text (no
# ORM compile: that was half of a page's Python time) and the rows become items directly.
_PAGE_SQL = """
WITH me AS MATERIALIZED ({me})
SELECT 0 AS kind, NULL::bigint AS position, NULL::uuid AS id, NULL::text AS type, NULL::bigint AS amount,
       NULL::bigint AS balance_after, NULL::text AS status, NULL::text AS note, NULL::timestamptz AS created_at,
       NULL::text AS handle, NULL::text AS name, NULL::text AS business_name,
       me.account_id, me.wallet_id, me.currency::text
FROM me
UNION ALL
SELECT 1, p.id, p.transaction_id, p.type, p.amount, p.balance_after, NULL, p.note, p.created_at,
       cw.handle, cu.name, cu.business_name, NULL, NULL, NULL
FROM me
CROSS JOIN LATERAL ({entries}) p
LEFT JOIN wallets_wallet cw ON cw.account_id = p.counterparty_account_id
LEFT JOIN accounts_user cu ON cu.id = cw.user_id
{withdrawals}
"""
# The authenticated login's wallet: no row when the login ended or the user is inactive
# (the same test as accounts.authentication._open_login_user), a row of NULLs when the user
# has no wallet.
_ME_BY_LOGIN = """
SELECT w.account_id, w.id AS wallet_id, w.currency
FROM accounts_user u
JOIN accounts_tokenfamily f ON f.user_id = u.id
LEFT JOIN wallets_wallet w ON w.user_id = u.id
WHERE u.id = %(user_id)s AND u.is_active AND f.id = %(family_id)s AND f.revoked_at IS NULL
"""
_ME_BY_WALLET = """
SELECT %(account_id)s::bigint AS account_id, %(wallet_id)s::uuid AS wallet_id, %(currency)s::text AS currency
"""
# A wallet's withdrawals without a posted entry (the partial index withdrawal_history),
# newest first by history key, below the cursor.
_WITHDRAWALS_SQL = """
UNION ALL
SELECT 2, wd.history_after_entry_id, wd.id, 'withdrawal', -wd.amount, wd.history_balance, wd.status, '',
       wd.created_at, NULL, NULL, NULL, NULL, NULL, wd.currency::text
FROM me
CROSS JOIN LATERAL (
    SELECT d.history_after_entry_id, d.id, d.amount, d.history_balance, d.status, d.created_at, d.currency
    FROM wallets_withdrawal d
    WHERE {conditions}
    ORDER BY d.history_after_entry_id DESC, d.created_at DESC, d.id DESC
    LIMIT {limit}
) wd
"""


def _withdrawals_sql(*, limit: int, after: Cursor | None, filters: HistoryFilter) -> str:
    """The withdrawals' part of a page; empty when the filters exclude withdrawals."""
    if (filters.types and "withdrawal" not in filters.types) or filters.direction == "credit":
        return ""
    conditions = ["d.wallet_id = me.wallet_id", f"d.status <> '{Withdrawal.Status.SUCCEEDED.value}'"]
    if after is not None:
        if after.after_withdrawal:
            conditions.append(
                "(d.history_after_entry_id, d.created_at, d.id) < (%(position)s, %(w_created_at)s, %(w_id)s)"
            )
        else:
            conditions.append("d.history_after_entry_id < %(position)s")
    if filters.created_from is not None:
        conditions.append("d.created_at >= %(created_from)s")
    if filters.created_to is not None:
        conditions.append("d.created_at < %(created_to)s")
    return _WITHDRAWALS_SQL.format(conditions=" AND ".join(conditions), limit=int(limit))


def _page_sql(*, me: str, limit: int, after: Cursor | None, filters: HistoryFilter) -> str:
    """The page statement for `limit` items: it reads limit + 1 of each source (the extra
    one tells whether there is more)."""
    entries = account_entries_sql(account="me.account_id", limit=limit + 1, before=after is not None, filters=filters)
    withdrawals = _withdrawals_sql(limit=limit + 1, after=after, filters=filters)
    return _PAGE_SQL.format(me=me, entries=entries, withdrawals=withdrawals)


def _page_params(*, after: Cursor | None, filters: HistoryFilter) -> dict:
    # Integers as int8 whatever their size, so that one statement text is one prepared
    # statement (psycopg would send small ones as int2 or int4, each a statement of its own).
    params = {
        "types": list(filters.types),
        "created_from": filters.created_from,
        "created_to": filters.created_to,
    }
    if after is not None:
        # Entries below the cursor: after an entry E, those older than E; after a withdrawal
        # placed after entry P, entry P itself and older.
        params["before"] = Int8(after.position + (1 if after.after_withdrawal else 0))
        params["position"] = Int8(after.position)
        params["w_created_at"] = after.withdrawal_created_at
        params["w_id"] = after.withdrawal_id
    return params


@dataclass(frozen=True)
class _Me:
    account_id: int | None
    wallet_id: uuid.UUID | None
    currency: str | None


def _read_page(*, me_sql: str, me_params: dict, limit: int, after: Cursor | None, filters: HistoryFilter):
    """(me, rows) of one page; me is None when `me_sql` finds no row."""
    sql = _page_sql(me=me_sql, limit=limit, after=after, filters=filters)
    with prepared_cursor() as cursor:
        cursor.execute(sql, {**_page_params(after=after, filters=filters), **me_params})
        rows = cursor.fetchall()
    me = next((_Me(row[12], row[13], row[14]) for row in rows if row[0] == 0), None)
    return me, [row for row in rows if row[0] != 0]


def _page(*, rows: list, limit: int, account_id: int, currency: str) -> Page:
    """Merge the entries and withdrawals of a page by history key, newest first."""
    # An entry's key (entry id, 1); a withdrawal's (its position, 2, created_at, id).
    rows.sort(key=lambda r: (r[1], 1) if r[0] == 1 else (r[1], 2, r[8], r[2]), reverse=True)
    has_more = len(rows) > limit
    rows = rows[:limit]
    items = []
    for row in rows:
        kind, _, item_id, type_, amount, balance_after, status, note, created_at, handle, name, bname, _, _, own = row
        entry = kind == 1
        items.append(
            {
                "id": str(item_id),
                "type": type_,
                "direction": "credit" if amount > 0 else "debit",
                "amount": abs(amount),
                "currency": currency if entry else own,
                "balance_after": balance_after,
                "status": "posted" if entry else "reversed" if status == Withdrawal.Status.FAILED else "pending",
                "counterparty": None if handle is None else {"handle": handle, "name": bname or name},
                "note": note,
                "created_at": created_at.isoformat().replace("+00:00", "Z"),
            }
        )
    next_cursor = None
    if has_more:
        last = rows[-1]
        if last[0] == 1:
            next_cursor = cursor_encode(account_id=account_id, entry_id=last[1])
        else:
            next_cursor = cursor_encode(
                account_id=account_id, entry_id=last[1], withdrawal_created_at=last[8], withdrawal_id=last[2]
            )
    return Page(items, has_more, next_cursor)


def wallet_history(*, wallet: Wallet, limit: int, cursor: str | None, filters: HistoryFilter) -> Page:
    """A page of the wallet's history: one statement."""
    after = cursor_decode(cursor=cursor, account_id=wallet.account_id) if cursor else None
    _, rows = _read_page(
        me_sql=_ME_BY_WALLET,
        me_params={"account_id": Int8(wallet.account_id), "wallet_id": wallet.id, "currency": wallet.currency},
        limit=limit,
        after=after,
        filters=filters,
    )
    return _page(rows=rows, limit=limit, account_id=wallet.account_id, currency=wallet.currency)


def login_history(
    *, user_id: uuid.UUID, family_id: uuid.UUID, limit: int, cursor: str | None, filters: HistoryFilter
) -> Page | None:
    """A page of the history of the wallet of this login's user, in one statement that
    also checks the login as accounts.authentication does (open, user active). None when
    the login ended or the user has no wallet: the caller answers that as the routes that
    authenticate up front do. A cursor issued for another wallet raises InvalidCursor."""
    owner, after = cursor_parse(cursor) if cursor else (None, None)
    me, rows = _read_page(
        me_sql=_ME_BY_LOGIN,
        me_params={"user_id": user_id, "family_id": family_id},
        limit=limit,
        after=after,
        filters=filters,
    )
    if me is None or me.account_id is None:
        return None
    if after is not None:
        _cursor_owned(owner, me.account_id)
    return _page(rows=rows, limit=limit, account_id=me.account_id, currency=me.currency)


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
