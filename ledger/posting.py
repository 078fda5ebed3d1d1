"""The posting service: the only code that writes entries or changes balances.

A `PostingCommand` is one ledger transaction to be: its type and legs (account, signed
amount; credits positive). `transactions_post` takes a batch of commands and, inside the
caller's database transaction, locks every account they touch (ascending id, see
`accounts_lock`), then evaluates the commands in order against the locked balances. Each
command succeeds or fails on its own: a refused command (`Rejected`, with the ApiError that
refused it) leaves no trace and does not stop the others. The accepted ones are written in
one statement: an INSERT of transactions, an INSERT of entries (so each transaction's legs
arrive in one statement, as the database's balance trigger requires) and an UPDATE of
balances, by increment. Balances are never written back from Python memory.

Callers own the database transaction (`transaction.atomic(durable=True)`) so that what they
record beside the money (idempotency keys, outbox events, payment attempt states) commits or
rolls back with it. `with_retries` re-runs such a block on a deadlock or serialization failure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from django.db import OperationalError, connection, transaction

from ledger.models import Account, Entry, Transaction
from walletsite import metrics
from walletsite.db import Query, model_columns, model_from_row, pipelined, sqlstate_of
from walletsite.errors import ApiError, CurrencyMismatch, InsufficientFunds, LimitExceeded

logger = logging.getLogger("ledger.posting")

# The largest balance the ledger holds: JSON clients (JavaScript) read integers exactly only
# up to 2^53 - 1.
MAX_BALANCE = 2**53 - 1

T = TypeVar("T")


@dataclass(frozen=True)
class Leg:
    account_id: int
    amount: int


@dataclass(frozen=True)
class PostingCommand:
    type: str
    legs: Sequence[Leg]
    note: str = ""
    reference: str = ""
    # Runs after the accounts are locked, with the locked rows; raising an ApiError refuses
    # this command only. Callers use it for rules the ledger does not know (a frozen wallet,
    # a limit) so that those rules are checked under the same locks as the balance.
    check: Callable[[Mapping[int, Account]], None] | None = None

    def __post_init__(self) -> None:
        if self.type not in Transaction.Type.values:
            raise ValueError(f"unknown transaction type {self.type!r}")
        if len(self.legs) < 2:
            raise ValueError("a ledger transaction needs at least two legs")
        for leg in self.legs:
            if type(leg.amount) is not int or leg.amount == 0:
                raise ValueError(f"leg amounts are non-zero integers, got {leg.amount!r}")
        if sum(leg.amount for leg in self.legs) != 0:
            raise ValueError("the legs of a ledger transaction must sum to zero")
        if len({leg.account_id for leg in self.legs}) != len(self.legs):
            raise ValueError("each account appears at most once in a ledger transaction")


@dataclass(frozen=True)
class Posted:
    command: PostingCommand
    transaction: Transaction
    entries: tuple[Entry, ...] = field(repr=False)

    def entry_for(self, account_id: int) -> Entry:
        return next(e for e in self.entries if e.account_id == account_id)


@dataclass(frozen=True)
class Rejected:
    command: PostingCommand
    error: ApiError


def accounts_lock(*, account_ids: Iterable[int]) -> dict[int, Account]:
    """Lock the accounts FOR NO KEY UPDATE, in ascending id order, and return them.

    Lock order: every code path that locks more than one account locks them here, ascending
    by id, so two transfers between the same accounts in opposite directions queue instead
    of deadlocking. NO KEY UPDATE does not block inserts of entries that reference the
    account (they take KEY SHARE).
    """
    if not connection.in_atomic_block:
        raise RuntimeError("accounts_lock must run inside transaction.atomic")
    (accounts,) = pipelined(accounts_lock_query(account_ids=account_ids))
    return accounts


def accounts_lock_query(*, account_ids: Iterable[int]) -> Query[dict[int, Account]]:
    """accounts_lock's statement, for a caller that runs it with others inside its
    transaction (walletsite.db.pipelined)."""
    ids = sorted(set(account_ids))

    def read(rows: list[tuple]) -> dict[int, Account]:
        accounts = _accounts_by_id(rows)
        missing = set(ids) - set(accounts)
        if missing:
            raise ValueError(f"no ledger accounts {sorted(missing)}")
        return accounts

    return Query(_accounts_lock_sql("a.id = ANY(%s::bigint[])"), [ids], read=read)


def accounts_lock_selected_query(*, ids_sql: str, params: Sequence) -> Query[dict[int, Account]]:
    """accounts_lock_query for the accounts whose ids a subquery selects (`ids_sql`: a SELECT
    of one bigint column, with its `params`), for a caller that knows who owns the accounts
    but not yet their ids: finding and locking them is one statement."""
    return Query(_accounts_lock_sql(f"a.id IN ({ids_sql})"), params, read=_accounts_by_id)


def _accounts_lock_sql(condition: str) -> str:
    """The lock statement of the accounts that meet `condition`, in the lock order: ascending
    by id (the rows are sorted, then locked)."""
    return (
        f"SELECT {_ACCOUNT_COLUMNS} FROM ledger_account AS a"  # noqa: S608 - the model's column names
        f" WHERE {condition} ORDER BY a.id FOR NO KEY UPDATE OF a"
    )


def _accounts_by_id(rows: list[tuple]) -> dict[int, Account]:
    return {account.id: account for account in (model_from_row(Account, row) for row in rows)}


_ACCOUNT_COLUMNS = model_columns(Account, "a")


def _evaluate(command: PostingCommand, accounts: Mapping[int, Account]) -> None:
    """Raise the ApiError that refuses this command, if any, given the running balances."""
    currencies = {accounts[leg.account_id].currency for leg in command.legs}
    if len(currencies) > 1:
        raise CurrencyMismatch("The accounts of this movement hold different currencies")
    if command.check is not None:
        command.check(accounts)
    for leg in command.legs:
        account = accounts[leg.account_id]
        after = account.balance + leg.amount
        if abs(after) > MAX_BALANCE:
            raise LimitExceeded("The movement would take a balance past the largest amount the ledger holds")
        if account.kind == Account.Kind.CUSTOMER and leg.amount < 0 and after - account.held_balance < 0:
            raise InsufficientFunds("The wallet does not have enough available money for this amount")


@dataclass(frozen=True)
class PostingBatch:
    """A batch evaluated under its locks: one result per command, and the statement that
    writes the accepted ones (None when none was), still to run."""

    results: list[Posted | Rejected]
    write: Query[None] | None


def transactions_post(
    *, commands: Sequence[PostingCommand], accounts: Mapping[int, Account] | None = None
) -> list[Posted | Rejected]:
    """Post a batch of commands inside the caller's transaction; one result per command.

    `accounts`, when given, are rows the caller already locked with `accounts_lock` (it may
    need them locked before deciding what to post); they must cover every leg.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("transactions_post must run inside transaction.atomic")
    if accounts is None:
        accounts = accounts_lock(account_ids={leg.account_id for command in commands for leg in command.legs})
    batch = transactions_evaluate(commands=commands, accounts=accounts)
    if batch.write is not None:
        pipelined(batch.write)
    return batch.results


def transactions_evaluate(
    *, commands: Sequence[PostingCommand], accounts: Mapping[int, Account], created_at: datetime | None = None
) -> PostingBatch:
    """transactions_post without its write: the caller runs `write`, alone or with other
    statements of its transaction (walletsite.db.pipelined), before it commits. With
    `created_at` (a time the caller read from the database in this transaction) the posted
    results carry their timestamp before the write runs; without it they get the write's
    statement time when it has run."""
    if not connection.in_atomic_block:
        raise RuntimeError("transactions_evaluate must run inside transaction.atomic")
    needed = {leg.account_id for command in commands for leg in command.legs}
    if not needed <= set(accounts):
        raise ValueError("the locked accounts must cover every leg")
    # The locked rows carry the running balances: each command is evaluated (and its check
    # sees the balances) after the commands before it in the batch.
    start = {account_id: accounts[account_id].balance for account_id in needed}

    results: list[Posted | Rejected] = []
    to_write: list[tuple[PostingCommand, Transaction, list[Entry]]] = []
    for command in commands:
        try:
            _evaluate(command, accounts)
        except ApiError as error:
            metrics.LEDGER_REJECTIONS.labels(error.code).inc()
            results.append(Rejected(command, error.as_answer()))
            continue
        txn = Transaction(type=command.type, note=command.note, reference=command.reference, created_at=created_at)
        entries = []
        for leg in command.legs:
            account = accounts[leg.account_id]
            account.balance += leg.amount
            entries.append(
                Entry(
                    transaction=txn,
                    account_id=leg.account_id,
                    amount=leg.amount,
                    balance_after=account.balance,
                    type=command.type,
                    created_at=created_at,
                )
            )
        to_write.append((command, txn, entries))
        results.append(Posted(command, txn, tuple(entries)))

    if not to_write:
        return PostingBatch(results, None)
    deltas = {account_id: accounts[account_id].balance - start[account_id] for account_id in needed}
    return PostingBatch(results, _write_query(to_write, deltas, created_at))


# The whole write of a batch in one statement: its transactions, every leg (one INSERT, so
# the balance trigger sees each transaction's legs together) and the balances, by increment.
# Entry ids are drawn in leg order (ORDER BY n), so sorted they match the legs. Every row of
# the batch has one timestamp: the caller's (a database time read in this transaction), or
# else the statement's, the created_at the models' db_default gives.
_WRITE_SQL = """
WITH clock AS (
    SELECT coalesce(%s::timestamptz, statement_timestamp()) AS at
), t AS (
    INSERT INTO ledger_transaction (id, type, note, reference, created_at)
    SELECT u.id, u.type, u.note, u.reference, clock.at
      FROM clock, unnest(%s::uuid[], %s::text[], %s::text[], %s::text[]) AS u(id, type, note, reference)
), e AS (
    INSERT INTO ledger_entry (transaction_id, account_id, amount, balance_after, type, created_at)
    SELECT u.transaction_id, u.account_id, u.amount, u.balance_after, u.type, clock.at
      FROM clock, unnest(%s::uuid[], %s::bigint[], %s::bigint[], %s::bigint[], %s::text[])
           WITH ORDINALITY AS u(transaction_id, account_id, amount, balance_after, type, n)
     ORDER BY u.n
    RETURNING id
), b AS (
    UPDATE ledger_account AS a SET balance = a.balance + d.delta
      FROM unnest(%s::bigint[], %s::bigint[]) AS d(id, delta)
     WHERE a.id = d.id
)
SELECT (SELECT at FROM clock), ARRAY(SELECT id FROM e ORDER BY id)
"""


def _write_query(
    to_write: list[tuple[PostingCommand, Transaction, list[Entry]]],
    deltas: Mapping[int, int],
    created_at: datetime | None,
) -> Query[None]:
    transactions = [txn for _, txn, _ in to_write]
    entries = [entry for _, _, legs in to_write for entry in legs]
    changed = sorted((account_id, delta) for account_id, delta in deltas.items() if delta)

    def read(rows: list[tuple]) -> None:
        ((written_at, entry_ids),) = rows
        # The objects as saved rows: what the database stored, no longer to be inserted.
        for txn in transactions:
            txn.created_at = written_at
            txn._state.adding, txn._state.db = False, connection.alias
        for entry, entry_id in zip(entries, entry_ids, strict=True):
            entry.id, entry.created_at = entry_id, written_at
            entry._state.adding, entry._state.db = False, connection.alias
        for command, _, _ in to_write:
            metrics.LEDGER_TRANSACTIONS.labels(command.type).inc()
            metrics.LEDGER_MOVED.labels(command.type).inc(sum(leg.amount for leg in command.legs if leg.amount > 0))

    return Query(
        _WRITE_SQL,
        [
            created_at,
            [txn.id for txn in transactions],
            [txn.type for txn in transactions],
            [txn.note for txn in transactions],
            [txn.reference for txn in transactions],
            [entry.transaction_id for entry in entries],
            [entry.account_id for entry in entries],
            [entry.amount for entry in entries],
            [entry.balance_after for entry in entries],
            [entry.type for entry in entries],
            [account_id for account_id, _ in changed],
            [delta for _, delta in changed],
        ],
        read=read,
    )


def transaction_post(*, command: PostingCommand, accounts: Mapping[int, Account] | None = None) -> Posted:
    """Post one command; raise the ApiError that refused it."""
    (result,) = transactions_post(commands=[command], accounts=accounts)
    if isinstance(result, Rejected):
        raise result.error
    return result


def system_account(code: str) -> Account:
    return Account.objects.get(kind=Account.Kind.SYSTEM, code=code)


def account_open(*, currency: str) -> Account:
    """A new customer account, balance 0 (the only way accounts come to exist besides the
    data migration that creates the system accounts)."""
    return Account.objects.create(kind=Account.Kind.CUSTOMER, currency=currency)


# PostgreSQL's codes for a deadlock and a serialization failure: the database rolled the
# transaction back, so running the whole block again is safe.
_RETRYABLE = {"40P01", "40001"}


def with_retries(block: Callable[[], T], *, attempts: int = 4) -> T:
    """Run `block` (which opens its own durable atomic block) and re-run it when PostgreSQL
    reports a deadlock or serialization failure; any other error propagates at once."""
    for attempt in range(1, attempts + 1):
        try:
            return block()
        except OperationalError as exc:
            code = sqlstate_of(exc)
            if code not in _RETRYABLE or attempt == attempts:
                raise
            logger.warning("retrying after a transient database conflict", extra={"sqlstate": code, "attempt": attempt})
            time.sleep(0.005 * attempt)
    raise AssertionError("unreachable")


def atomic():
    """The database transaction of one money operation: durable, so it can never be
    nested inside another (a nested block would commit with its caller, not on its own)."""
    return transaction.atomic(durable=True)


__all__ = [
    "Leg",
    "Posted",
    "PostingBatch",
    "PostingCommand",
    "Rejected",
    "account_open",
    "accounts_lock",
    "accounts_lock_query",
    "atomic",
    "system_account",
    "transaction_post",
    "transactions_evaluate",
    "transactions_post",
    "with_retries",
]
