"""Limits by KYC tier: per transaction, outgoing per UTC day and month, and a balance ceiling.

Both checks run inside a PostingCommand `check` (or a hold_place `check`), that is after
ledger.posting has locked the accounts of the movement. Every outgoing movement of an account
takes that account's lock before it is checked, so the totals read here cannot change before
this transaction commits: concurrent requests queue on the lock and each one sees the others'
committed entries. That is what keeps concurrent transfers from overshooting a daily limit.

Outgoing money is what the customer sent: the debit entries of types transfer, payment and
withdrawal since the start of the current UTC day (month), plus the account's pending holds
(money on its way out, e.g. a withdrawal the bank has not settled). Pending holds count in
full in the day and the month they are pending in; a hold placed yesterday and posted today
counts on both days, which errs on the side of the limit.

How the totals are read, and which index serves them: entries have one index on
(account_id, id DESC) and none on created_at, and the ledger is not ours to change. A filter
on account_id and created_at alone would walk every entry the account ever had. Instead the
query finds an id below which no entry of this month can lie, and reads the account's
entries above it through (account_id, id): an index range scan of one month of the account's
entries (plus one day), whatever its age. The bound comes from the transactions' created_at
index: the newest ledger transaction created before the month began, minus a margin; its
entries' ids were drawn before the month began, because no database transaction stays open
as long as the margin (a day), and ids are drawn in order from one sequence (cache 1), so
every entry created in the month has a larger id. Both the bound and the sums are one
statement. The pending holds need no query: the locked account's held_balance is their sum
(the ledger keeps it so, and reconciliation checks it).

The ceiling reads the locked account's running balance: in a batch (transactions_post) it
includes the commands before this one. The outgoing totals do not: they are read from
committed entries, so a batch carries at most one outgoing movement per account (the
transfer batcher defers a second one to the next batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from accounts.models import Tier
from ledger.models import Account, Transaction
from wallets.models import Wallet
from walletsite.db import Query, pipelined
from walletsite.errors import LimitExceeded

OUTGOING_TYPES = (Transaction.Type.TRANSFER, Transaction.Type.PAYMENT, Transaction.Type.WITHDRAWAL)

# Longer than any database transaction of this service lives (see the module docstring).
BOUND_MARGIN = timedelta(days=1)

# The day and the month are those of the database clock, which also stamps created_at (the
# start of the posting's transaction); `now` replaces it in tests of the boundaries.
_OUTGOING_TEMPLATE = """
WITH clock AS (
    SELECT
        date_trunc('day', coalesce(%(now)s::timestamptz, now()) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS day_start,
        date_trunc('month', coalesce(%(now)s::timestamptz, now()) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS month_start
), bound AS (
    SELECT coalesce(max(b.id), 0) AS id
    FROM ledger_entry AS b
    WHERE b.transaction_id = (
        SELECT t.id FROM ledger_transaction AS t
        WHERE t.created_at < (SELECT month_start FROM clock) - %(margin)s
        ORDER BY t.created_at DESC
        LIMIT 1
    )
)
SELECT a.id, o.today, o.this_month
FROM @ACCOUNTS@ AS a(id)
CROSS JOIN clock
CROSS JOIN bound
-- LATERAL with an aggregate: one index range scan of (account_id, id) per account, never a
-- join over the whole entries table, whatever the planner guesses about the array.
CROSS JOIN LATERAL (
    SELECT
        coalesce(sum(-e.amount) FILTER (WHERE e.created_at >= clock.day_start), 0) AS today,
        coalesce(sum(-e.amount), 0) AS this_month
    FROM ledger_entry AS e
    WHERE e.account_id = a.id
      AND e.id > bound.id
      AND e.created_at >= clock.month_start
      AND e.amount < 0
      AND e.type = ANY(%(types)s)
) AS o
"""
_OUTGOING_SQL = _OUTGOING_TEMPLATE.replace("@ACCOUNTS@", "unnest(%(account_ids)s::bigint[])")
# The same totals for the accounts of the wallets of these users: for a caller that knows the
# senders but not yet their accounts (the transfer batch reads both in one round trip).
_OUTGOING_OF_USERS_SQL = _OUTGOING_TEMPLATE.replace(
    "@ACCOUNTS@", "(SELECT w.account_id FROM wallets_wallet AS w WHERE w.user_id = ANY(%(user_ids)s::uuid[]))"
)


@dataclass(frozen=True)
class Outgoing:
    """Money sent by one account in the current UTC day and month (posted entries only)."""

    today: int
    this_month: int


def outgoing_totals_many(*, account_ids, now: datetime | None = None) -> dict[int, Outgoing]:
    """The posted outgoing totals of the UTC day and month of `now` (default: the database's
    present; tests pass other times to check the day and month boundaries) of each account,
    in one statement."""
    (totals,) = pipelined(outgoing_totals_query(account_ids=account_ids, now=now))
    return totals


def outgoing_totals_query(
    *, account_ids=None, user_ids=None, now: datetime | None = None
) -> Query[dict[int, Outgoing]]:
    """outgoing_totals_many's statement, to run with others (walletsite.db.pipelined): for
    these accounts, or for the accounts of these users' wallets (by account id either way)."""
    if (account_ids is None) == (user_ids is None):
        raise TypeError("outgoing_totals_query takes account_ids or user_ids")
    params = {"now": now, "margin": BOUND_MARGIN, "types": list(OUTGOING_TYPES)}
    if user_ids is None:
        sql, params["account_ids"] = _OUTGOING_SQL, list(account_ids)
    else:
        sql, params["user_ids"] = _OUTGOING_OF_USERS_SQL, list(user_ids)
    return Query(
        sql,
        params,
        read=lambda rows: {
            account_id: Outgoing(today=int(today), this_month=int(month)) for account_id, today, month in rows
        },
    )


def outgoing_totals(*, account_id: int, now: datetime | None = None) -> Outgoing:
    """One account's outgoing totals (outgoing_totals_many)."""
    return outgoing_totals_many(account_ids=[account_id], now=now)[account_id]


def tier_of(*, wallet: Wallet) -> Tier:
    """The wallet owner's tier, read fresh (staff may have changed it since the wallet was
    loaded)."""
    return Tier.objects.get(users__id=wallet.user_id)


def _money(amount: int, currency: str) -> str:
    return f"{amount // 100:,}.{amount % 100:02d} {currency}"


def _locked_account(wallet: Wallet, accounts: Mapping[int, Account]) -> Account:
    try:
        return accounts[wallet.account_id]
    except KeyError:
        # The totals are only safe under the account lock; a caller without it is a bug.
        raise RuntimeError("limits are checked with the wallet's account locked (from a posting check)") from None


def outgoing_limits_check(
    *,
    wallet: Wallet,
    amount: int,
    accounts: Mapping[int, Account],
    now=None,
    tier: Tier | None = None,
    sent: Outgoing | None = None,
) -> None:
    """Refuse (422 limit_exceeded, `limit` naming which) an outgoing `amount` from `wallet`
    that breaks its owner's per-transaction, daily or monthly limit. Call from a posting
    check, with the locked accounts. A caller that read the owner's tier and the account's
    totals for many commands at once (under the same locks) passes them as `tier` and `sent`."""
    account = _locked_account(wallet, accounts)
    tier = tier or tier_of(wallet=wallet)
    money = lambda value: _money(value, wallet.currency)  # noqa: E731
    if amount > tier.per_transaction_limit:
        raise LimitExceeded(
            f"{money(amount)} is above the per-transaction limit of {money(tier.per_transaction_limit)}",
            limit="per_transaction",
        )
    if sent is None:
        sent = outgoing_totals(account_id=account.id, now=now)
    pending = account.held_balance
    for limit, used, allowed, period in (
        ("daily", sent.today + pending, tier.daily_outgoing_limit, "today"),
        ("monthly", sent.this_month + pending, tier.monthly_outgoing_limit, "this month"),
    ):
        if used + amount > allowed:
            raise LimitExceeded(
                f"The {limit} outgoing limit is {money(allowed)}: {money(used)} already sent or pending "
                f"{period}, so {money(amount)} more would exceed it by {money(used + amount - allowed)}",
                limit=limit,
            )


def balance_ceiling_check(
    *, wallet: Wallet, amount: int, accounts: Mapping[int, Account], tier: Tier | None = None
) -> None:
    """Refuse (422 limit_exceeded, limit balance_ceiling) a credit of `amount` that would take
    the wallet's balance above its owner's ceiling. Call from a posting check, with the locked
    accounts (their balances are the running ones, earlier commands of a batch included).
    Not for top-ups whose money the gateway already took."""
    account = _locked_account(wallet, accounts)
    tier = tier or tier_of(wallet=wallet)
    if account.balance + amount > tier.balance_ceiling:
        # The detail names the credit but not the wallet's balance or ceiling: the sender of a
        # transfer must not learn what the recipient holds.
        raise LimitExceeded(
            f"A credit of {_money(amount, wallet.currency)} would take the receiving wallet above its balance ceiling",
            limit="balance_ceiling",
        )
