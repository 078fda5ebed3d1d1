"""Holds: money reserved on an account, later posted or released, exactly once.

Placing a hold raises the account's `held_balance`; spending checks `balance - held_balance`
(ledger.posting), so reserved money cannot be spent twice. Posting a hold lowers
`held_balance` and posts a transaction that debits the account in the same step; releasing
lowers `held_balance` only. Every change runs inside the caller's database transaction,
under the locks, and `held_balance` moves only by increment. The database refuses a second
transition of a hold (ledger/migrations/0006_holds.py).

Lock order: the hold row first, then the accounts in ascending id (accounts_lock), in every
path that takes both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from django.db import connection
from django.db.models import F
from django.db.models.functions import Now

from ledger.models import Account, Hold
from ledger.posting import Leg, Posted, PostingCommand, accounts_lock, transaction_post
from walletsite.errors import InsufficientFunds


def _require_atomic() -> None:
    if not connection.in_atomic_block:
        raise RuntimeError("holds change only inside transaction.atomic")


def hold_place(
    *,
    account_id: int,
    amount: int,
    reference: str,
    check: Callable[[Mapping[int, Account]], None] | None = None,
) -> Hold:
    """Reserve `amount` on the account; 422 insufficient_funds when its available balance
    is smaller. `check` runs under the account's lock, like a PostingCommand's."""
    _require_atomic()
    if type(amount) is not int or amount <= 0:
        raise ValueError(f"a hold amount is a positive integer, got {amount!r}")
    accounts = accounts_lock(account_ids=[account_id])
    account = accounts[account_id]
    if check is not None:
        check(accounts)
    if account.kind == Account.Kind.CUSTOMER and account.balance - account.held_balance < amount:
        raise InsufficientFunds("The wallet does not have enough available money for this amount")
    Account.objects.filter(id=account_id).update(held_balance=F("held_balance") + amount)
    account.held_balance += amount
    return Hold.objects.create(account_id=account_id, amount=amount, reference=reference)


def _lock_pending(hold_id) -> Hold | None:
    """The hold, locked, if it is still pending; None once it was posted or released."""
    hold = Hold.objects.select_for_update(of=("self",), no_key=True).get(id=hold_id)
    return hold if hold.status == Hold.Status.PENDING else None


def hold_post(*, hold_id, to_account_id: int, type: str, note: str = "", reference: str = "") -> Posted | None:
    """Turn a pending hold into a transaction from its account to `to_account_id`; None
    when the hold was already posted or released (nothing changes then)."""
    _require_atomic()
    hold = _lock_pending(hold_id)
    if hold is None:
        return None
    accounts = accounts_lock(account_ids=[hold.account_id, to_account_id])
    # The reservation ends in the same step as the debit it reserved money for, so the
    # debit is checked against the balance without this hold.
    Account.objects.filter(id=hold.account_id).update(held_balance=F("held_balance") - hold.amount)
    accounts[hold.account_id].held_balance -= hold.amount
    posted = transaction_post(
        command=PostingCommand(
            type=type,
            legs=(Leg(hold.account_id, -hold.amount), Leg(to_account_id, hold.amount)),
            note=note,
            reference=reference or hold.reference,
        ),
        accounts=accounts,
    )
    Hold.objects.filter(id=hold.id).update(status=Hold.Status.POSTED, transaction=posted.transaction, resolved_at=Now())
    return posted


def hold_release(*, hold_id) -> Hold | None:
    """Give the reserved money back to the account's available balance; None when the hold
    was already posted or released."""
    _require_atomic()
    hold = _lock_pending(hold_id)
    if hold is None:
        return None
    accounts_lock(account_ids=[hold.account_id])
    Account.objects.filter(id=hold.account_id).update(held_balance=F("held_balance") - hold.amount)
    Hold.objects.filter(id=hold.id).update(status=Hold.Status.RELEASED, resolved_at=Now())
    hold.refresh_from_db()
    return hold


__all__ = ["hold_place", "hold_post", "hold_release"]
