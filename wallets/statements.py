"""Monthly statements (API.md "Statements"): the opening balance, every entry of one UTC
calendar month oldest first, and the closing balance, as JSON or CSV.

Consistency with history comes from the ledger itself: the entries of one account are
written one at a time under the account's lock, so on one account entry ids, `created_at`
and `balance_after` all grow together. Hence

- the opening balance is the `balance_after` of the account's last entry before the month
  (0 when there is none), and the closing balance that of its last entry in the month (the
  opening balance when there is none): opening + the signed amounts == closing, always;
- the month's entries are an id range. It is fixed once, at the start (`last_entry_id`), and
  then read in keyset batches, so a statement of the current month stays consistent while
  new entries arrive, and a month of any size costs one query per batch, never one per
  entry, and never holds a transaction open while it is sent.

Each item is `wallets.history.history_item`, the very dict GET /wallet/transactions shows.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime

from django.db.models import Count, Max, Sum

from ledger.models import Entry
from ledger.selectors import _counterparty
from wallets.history import _parties, history_item
from wallets.models import Wallet
from walletsite.errors import ValidationFailed

BATCH_SIZE = 1000
_MONTH = re.compile(r"^([0-9]{4})-([0-9]{2})$")
# The CSV columns. Amounts are integers in minor units: `amount` as in history (never
# negative) and `signed_amount` (credits positive, debits negative), so that a spreadsheet
# sums the month without reading `direction`.
CSV_COLUMNS = (
    "created_at",
    "transaction_id",
    "type",
    "direction",
    "amount",
    "signed_amount",
    "currency",
    "balance_after",
    "status",
    "counterparty_handle",
    "counterparty_name",
    "note",
)
# A text cell starting with one of these is a formula to a spreadsheet (CSV injection):
# such cells are prefixed with a quote. Only free text is touched, never a number.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class Statement:
    wallet: Wallet
    month: str
    start: datetime
    end: datetime
    opening_balance: int
    closing_balance: int
    entry_count: int
    # The newest entry of the month when the statement was started; None when it has none.
    last_entry_id: int | None

    def header(self) -> dict:
        return {
            "month": self.month,
            "currency": self.wallet.currency,
            "opening_balance": self.opening_balance,
            "closing_balance": self.closing_balance,
        }


def statement_month_parse(*, month: str, today: date | None = None) -> date:
    """`YYYY-MM` as the first day of that month. A malformed month, month 00 or 13, a year
    before 2000, or a month that has not begun yet (UTC) is refused with 400
    validation_failed: a statement of the future would be an empty promise."""
    today = today or datetime.now(UTC).date()
    found = _MONTH.match(month)
    if not found or not 1 <= int(found.group(2)) <= 12 or int(found.group(1)) < 2000:
        raise ValidationFailed(
            "month: must be YYYY-MM, a month from 2000-01 on",
            errors=[{"field": "month", "message": "Must be YYYY-MM (month 01-12)"}],
        )
    first = date(int(found.group(1)), int(found.group(2)), 1)
    if first > today.replace(day=1):
        raise ValidationFailed(
            "month: must not be in the future",
            errors=[{"field": "month", "message": "Must be the current month or an earlier one"}],
        )
    return first


def _month_bounds(first: date) -> tuple[datetime, datetime]:
    start = datetime(first.year, first.month, 1, tzinfo=UTC)
    end = datetime(first.year + first.month // 12, first.month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def wallet_statement(*, wallet: Wallet, month: date) -> Statement:
    """The statement of one calendar month (UTC)."""
    start, end = _month_bounds(month)
    return statement_for_period(wallet=wallet, label=f"{month.year:04d}-{month.month:02d}", start=start, end=end)


def statement_for_period(*, wallet: Wallet, label: str, start: datetime, end: datetime) -> Statement:
    """The statement's balances and bounds for entries created in [start, end), in two
    queries (each on the account's entry_account_history index)."""
    entries = Entry.objects.filter(account_id=wallet.account_id)
    before = entries.filter(created_at__lt=start).order_by("-id").values_list("balance_after", flat=True).first()
    opening = before or 0
    totals = entries.filter(created_at__gte=start, created_at__lt=end).aggregate(
        count=Count("id"), total=Sum("amount"), last=Max("id")
    )
    return Statement(
        wallet=wallet,
        month=label,
        start=start,
        end=end,
        opening_balance=opening,
        closing_balance=opening + (totals["total"] or 0),
        entry_count=totals["count"],
        last_entry_id=totals["last"],
    )


def statement_items(*, statement: Statement, batch_size: int = BATCH_SIZE) -> Iterator[dict]:
    """The month's history items, oldest first, read in keyset batches up to the entry that
    was last when the statement started."""
    if statement.last_entry_id is None:
        return
    wallet = statement.wallet
    after = 0
    while True:
        batch = list(
            Entry.objects.filter(
                account_id=wallet.account_id,
                created_at__gte=statement.start,
                created_at__lt=statement.end,
                id__gt=after,
                id__lte=statement.last_entry_id,
            )
            .select_related("transaction")
            .annotate(counterparty_account_id=_counterparty())
            .order_by("id")[:batch_size]
        )
        if not batch:
            return
        parties = _parties(batch)
        for entry in batch:
            yield history_item(entry, currency=wallet.currency, parties=parties)
        after = batch[-1].id
        if len(batch) < batch_size:
            return


def signed_amount(item: dict) -> int:
    return item["amount"] if item["direction"] == "credit" else -item["amount"]


def _text_cell(value: str) -> str:
    return f"'{value}" if value.startswith(_FORMULA_START) else value


def _csv_row(item: dict) -> list:
    counterparty = item["counterparty"] or {}
    return [
        item["created_at"],
        item["id"],
        item["type"],
        item["direction"],
        item["amount"],
        signed_amount(item),
        item["currency"],
        item["balance_after"],
        item["status"],
        counterparty.get("handle", ""),
        _text_cell(counterparty.get("name", "")),
        _text_cell(item["note"] or ""),
    ]


def statement_csv(*, statement: Statement) -> Iterator[str]:
    """The statement as CSV text, a chunk per batch of rows: the header row, an
    `opening_balance` row, one row per entry, a `closing_balance` row (the balances in
    `balance_after`, so the file stands on its own)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def flush() -> str:
        text = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return text

    currency = statement.wallet.currency
    writer.writerow(CSV_COLUMNS)
    writer.writerow(_balance_row(statement.start, "opening_balance", statement.opening_balance, currency))
    for count, item in enumerate(statement_items(statement=statement), start=1):
        writer.writerow(_csv_row(item))
        if count % BATCH_SIZE == 0:
            yield flush()
    writer.writerow(_balance_row(statement.end, "closing_balance", statement.closing_balance, currency))
    yield flush()


def _balance_row(at: datetime, kind: str, balance: int, currency: str) -> list:
    stamp = at.isoformat().replace("+00:00", "Z")
    return [stamp, "", kind, "", "", "", currency, balance, "", "", "", ""]


def statement_json(*, statement: Statement) -> Iterator[str]:
    """The statement as one JSON object, streamed: the header fields, then the entries a
    batch at a time, so a month of any size is never all in memory."""
    head = json.dumps(statement.header(), separators=(",", ":"))
    yield head[:-1] + ',"entries":['
    chunk: list[str] = []
    for count, item in enumerate(statement_items(statement=statement)):
        chunk.append(("," if count else "") + json.dumps(item, separators=(",", ":")))
        if len(chunk) == BATCH_SIZE:
            yield "".join(chunk)
            chunk = []
    yield "".join(chunk) + "]}"
