"""Money out to banks (API.md "Money out: withdrawals").

The life of a withdrawal, each step its own committed database transaction:

1. `withdrawal_create` (the API request): the hold is placed on the wallet's account
   (available balance drops, balance does not), the withdrawal is recorded `pending` and
   `withdrawal.requested` is emitted, all in the request's transaction.
2. `withdrawals_submit` (a worker job): claims one pending withdrawal (SKIP LOCKED) and marks
   it `submitting` in a transaction of its own, which commits BEFORE the bank is called; then
   it calls the bank over HTTP with no row locked, the withdrawal id as the bank's idempotency
   reference; then it records `submitted` (or settles, when the bank answered a final status).
   A crash after step 2's commit leaves `submitting`: the bank may or may not have the
   payout, and only the bank knows.
3. The bank's signed callback (`bank_event_process`) posts the hold to the `bank_payouts`
   system account (type withdrawal) or releases it.
4. `withdrawals_recover` (a worker job) looks at withdrawals in flight longer than
   WITHDRAWAL_RECHECK_SECONDS and ASKS the bank before doing anything: a payout the bank
   settled is settled here; one the bank never received is sent (the only path that sends a
   payout again, and only because the bank said it has none); one still processing past
   WITHDRAWAL_TIMEOUT_SECONDS is cancelled at the bank, then released.

So the bank is never asked to pay twice: every send carries the same reference, which the
bank deduplicates, and nothing is re-sent unless the bank has no record of it.

Settling is exactly once: it happens under the withdrawal's row lock, against its committed
status; the hold refuses a second transition in the database too. A callback that
contradicts what was settled (a success after the release, a failure after the posting)
moves nothing, and the withdrawal is flagged for review and audited.

Lock order, in every path here: bank event id (insert), then the withdrawal row, then the
hold row, then ledger accounts by ascending id (ledger.holds / ledger.posting). No bank call
is made while any of these is locked.

While the bank is failing, the bank client's circuit breaker (wallets.bank) refuses calls;
`withdrawals_submit` then leaves pending withdrawals queued (held, shown as pending) instead
of sending requests, and resumes once a probe after the cool-down succeeds.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.crypto import salted_hmac

from ledger.audit import audit_record
from ledger.holds import hold_place, hold_post, hold_release
from ledger.models import Account, Entry
from ledger.outbox import outbox_emit
from ledger.posting import atomic, system_account, with_retries
from wallets.bank import (
    BankError,
    BankUnreachable,
    Payout,
    bank_breaker,
    bank_payout_cancel,
    bank_payout_status,
    bank_payout_submit,
)
from wallets.limits import outgoing_limits_check
from wallets.models import BankAccount, BankEvent, Wallet, Withdrawal
from wallets.transfers import wallets_must_be_active
from walletsite.errors import AmountMismatch, ApiError, BankAccountExists, BankAccountNotFound, WithdrawalNotFound

logger = logging.getLogger("wallets.withdrawals")

PAYOUTS_ACCOUNT = "bank_payouts"
EVENT_SUCCEEDED = "payout.succeeded"
EVENT_FAILED = "payout.failed"
EVENT_TYPES = (EVENT_SUCCEEDED, EVENT_FAILED)
CALLBACK_ACTOR = "system:bank_callback"
RECOVERY_ACTOR = "system:withdrawal_recovery"
SUBMIT_BATCH_SIZE = 50
RECOVER_BATCH_SIZE = 100
# A run starts no bank call after this long. Each call may take the bank's whole timeout, and
# the worker does one thing at a time: without a budget a slow bank held the worker's loop,
# and every outbox event and merchant webhook behind it, for minutes (50 payouts of a bank that
# times out; found by the chaos suite). As wallets.notifications' webhook runs, a run lasts at
# most the budget plus one call; what is left waits for the next run.
RUN_BUDGET_SECONDS = 5.0
_FINGERPRINT_SALT = "wallets.bank_account.fingerprint.v1"

Status = Withdrawal.Status
# What the API shows of a withdrawal's status (submitting and submitted are pending to the
# customer).
PUBLIC_STATUSES = [("pending", "pending"), ("succeeded", "succeeded"), ("failed", "failed")]


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _parse_uuid(value) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


# --- bank accounts -----------------------------------------------------------------------


def bank_account_fingerprint(*, account_number: str, ifsc: str) -> str:
    """A keyed hash of the account: duplicates are found without comparing, indexing or
    logging the number itself, and the hash says nothing to anyone without the key."""
    return salted_hmac(_FINGERPRINT_SALT, f"{ifsc}:{account_number}", algorithm="sha256").hexdigest()


def bank_account_create(*, wallet: Wallet, account_number: str, ifsc: str, holder_name: str) -> BankAccount:
    """Register a payout destination; 409 bank_account_exists when the wallet already has
    this number at this IFSC."""
    try:
        with transaction.atomic():
            return BankAccount.objects.create(
                wallet=wallet,
                account_number=account_number,
                last4=account_number[-4:],
                ifsc=ifsc,
                holder_name=holder_name,
                fingerprint=bank_account_fingerprint(account_number=account_number, ifsc=ifsc),
            )
    except IntegrityError:
        # The only unique constraint is (wallet, fingerprint); the message names neither.
        raise BankAccountExists("You already registered this bank account") from None


def bank_accounts_list(*, wallet: Wallet) -> list[BankAccount]:
    return list(BankAccount.objects.filter(wallet=wallet).order_by("-created_at", "-id"))


def bank_account_out(bank_account: BankAccount) -> dict:
    """The API's view of a bank account: never more than the last four digits."""
    return {
        "id": str(bank_account.id),
        "last4": bank_account.last4,
        "ifsc": bank_account.ifsc,
        "holder_name": bank_account.holder_name,
        "created_at": _iso(bank_account.created_at),
    }


# --- the request -------------------------------------------------------------------------


def withdrawal_create(*, wallet: Wallet, bank_account_id: str, amount: int) -> Withdrawal:
    """Hold `amount` on the wallet and record a pending withdrawal to one of its bank
    accounts. Runs inside the caller's transaction (the idempotency record commits with it).

    The withdrawal row is new, so the first lock taken is the account's (inside hold_place);
    the frozen-wallet and limit checks run under that lock."""
    account_id = _parse_uuid(bank_account_id)
    bank_account = BankAccount.objects.filter(id=account_id, wallet=wallet).first() if account_id else None
    if bank_account is None:
        raise BankAccountNotFound("No bank account with this id is registered to you")
    withdrawal_id = uuid.uuid4()
    position: dict[str, int] = {}

    def check(accounts: Mapping[int, Account]) -> None:
        wallets_must_be_active(wallet.id)
        outgoing_limits_check(wallet=wallet, amount=amount, accounts=accounts)
        # Where the withdrawal shows in history until it has an entry (wallets.history):
        # after the account's newest entry, read while no entry can be added to it.
        position["entry"] = (
            Entry.objects.filter(account_id=wallet.account_id).order_by("-id").values_list("id", flat=True).first() or 0
        )
        position["balance"] = accounts[wallet.account_id].balance

    hold = hold_place(account_id=wallet.account_id, amount=amount, reference=f"withdrawal:{withdrawal_id}", check=check)
    withdrawal = Withdrawal.objects.create(
        id=withdrawal_id,
        wallet=wallet,
        bank_account=bank_account,
        hold=hold,
        amount=amount,
        currency=wallet.currency,
        history_after_entry_id=position["entry"],
        history_balance=position["balance"],
    )
    outbox_emit(
        type="withdrawal.requested",
        payload={
            "withdrawal_id": str(withdrawal.id),
            "wallet_ids": [str(wallet.id)],
            "amount": amount,
            "currency": wallet.currency,
            "bank_account_id": str(bank_account.id),
        },
    )
    withdrawal.refresh_from_db(fields=["created_at", "updated_at"])
    return withdrawal


def withdrawal_get(*, wallet: Wallet, withdrawal_id: str) -> Withdrawal:
    """The caller's withdrawal; 404 for a malformed id, an unknown one or another wallet's."""
    parsed = _parse_uuid(withdrawal_id)
    withdrawal = (
        Withdrawal.objects.select_related("bank_account").filter(id=parsed, wallet=wallet).first() if parsed else None
    )
    if withdrawal is None:
        raise WithdrawalNotFound("No withdrawal with this id belongs to you")
    return withdrawal


def withdrawal_out(withdrawal: Withdrawal) -> dict:
    return {
        "withdrawal_id": str(withdrawal.id),
        "status": withdrawal.public_status,
        "amount": withdrawal.amount,
        "currency": withdrawal.currency,
        "bank_account": bank_account_out(withdrawal.bank_account),
        "transaction_id": str(withdrawal.transaction_id) if withdrawal.transaction_id else None,
        "failure_reason": withdrawal.failure_reason or None,
        "created_at": _iso(withdrawal.created_at),
        "updated_at": _iso(withdrawal.updated_at),
        "settled_at": _iso(withdrawal.settled_at),
    }


# --- settling ----------------------------------------------------------------------------


def _lock(withdrawal_id) -> Withdrawal | None:
    return (
        Withdrawal.objects.select_for_update(of=("self",), no_key=True)
        .select_related("wallet")
        .filter(id=withdrawal_id)
        .first()
    )


def _flag(withdrawal: Withdrawal, *, reason: str, actor_label: str, data: dict) -> None:
    """Mark the withdrawal for an operator, with the reason appended, and audit it."""
    withdrawal.flagged_for_review = True
    withdrawal.review_reason = f"{withdrawal.review_reason}\n{reason}" if withdrawal.review_reason else reason
    Withdrawal.objects.filter(id=withdrawal.id).update(
        flagged_for_review=True, review_reason=withdrawal.review_reason, updated_at=Now()
    )
    audit_record(
        actor=None,
        actor_label=actor_label,
        action="withdrawal.flag",
        target=f"withdrawal:{withdrawal.id}",
        reason=reason,
        data=data,
    )
    logger.warning("withdrawal flagged for review", extra={"withdrawal_id": str(withdrawal.id), "reason": reason})


def _settle(withdrawal: Withdrawal, *, succeeded: bool, reason: str, source: str, actor_label: str) -> str:
    """Post or release the hold of a LOCKED withdrawal, once. Returns posted, released,
    already_settled (the same outcome again) or flagged (a contradiction: nothing moved)."""
    if withdrawal.status not in Withdrawal.UNSETTLED:
        if (withdrawal.status == Status.SUCCEEDED) == succeeded:
            return "already_settled"
        said = "succeeded" if succeeded else "failed"
        _flag(
            withdrawal,
            reason=f"{source} says the payout {said} after the withdrawal was {withdrawal.status}; nothing moved",
            actor_label=actor_label,
            data={"source": source, "said": said, "status": withdrawal.status},
        )
        return "flagged"
    payload = {
        "withdrawal_id": str(withdrawal.id),
        "wallet_ids": [str(withdrawal.wallet_id)],
        "amount": withdrawal.amount,
        "currency": withdrawal.currency,
    }
    if succeeded:
        # The bank has paid: neither a freeze nor a limit can undo that, so the posting
        # takes no check.
        posted = hold_post(
            hold_id=withdrawal.hold_id,
            to_account_id=system_account(PAYOUTS_ACCOUNT).id,
            type="withdrawal",
            reference=f"withdrawal:{withdrawal.id}",
        )
        if posted is None:
            raise RuntimeError(f"the hold of unsettled withdrawal {withdrawal.id} is not pending")
        Withdrawal.objects.filter(id=withdrawal.id).update(
            status=Status.SUCCEEDED, transaction=posted.transaction, settled_at=Now(), updated_at=Now()
        )
        outbox_emit(type="withdrawal.succeeded", payload={**payload, "transaction_id": str(posted.transaction.id)})
        result = "posted"
    else:
        if hold_release(hold_id=withdrawal.hold_id) is None:
            raise RuntimeError(f"the hold of unsettled withdrawal {withdrawal.id} is not pending")
        Withdrawal.objects.filter(id=withdrawal.id).update(
            status=Status.FAILED, failure_reason=reason, settled_at=Now(), updated_at=Now()
        )
        outbox_emit(type="withdrawal.failed", payload={**payload, "reason": reason})
        result = "released"
    logger.info("withdrawal settled", extra={"withdrawal_id": str(withdrawal.id), "result": result, "source": source})
    return result


def _settle_by_payout(withdrawal_id, payout: Payout, *, source: str, actor_label: str, timed_out: bool = False) -> str:
    """Settle from the bank's final word on a payout (succeeded, failed or cancelled)."""

    def block() -> str:
        with atomic():
            withdrawal = _lock(withdrawal_id)
            if payout.status == "succeeded":
                return _settle(withdrawal, succeeded=True, reason="", source=source, actor_label=actor_label)
            if timed_out:
                reason = "the bank did not settle the payout in time; it was cancelled"
            elif payout.status == "cancelled":
                reason = "the bank cancelled the payout"
            else:
                reason = str(payout.body.get("reason") or "the bank rejected the payout")
            return _settle(withdrawal, succeeded=False, reason=reason, source=source, actor_label=actor_label)

    return with_retries(block)


# --- sending payouts ---------------------------------------------------------------------


def _claim_next() -> Withdrawal | None:
    """Take the oldest pending withdrawal off the queue: `submitting`, committed before the
    bank is called. Rows another worker holds are skipped."""
    with atomic():
        withdrawal = (
            Withdrawal.objects.select_for_update(of=("self",), skip_locked=True)
            .filter(status=Status.PENDING)
            .order_by("created_at")
            .first()
        )
        if withdrawal is None:
            return None
        Withdrawal.objects.filter(id=withdrawal.id).update(
            status=Status.SUBMITTING, submissions=F("submissions") + 1, last_error="", updated_at=Now()
        )
    return Withdrawal.objects.select_related("bank_account").get(id=withdrawal.id)


def _record_error(withdrawal_id, *, status: str | None, error: str, sent: bool) -> None:
    """After a failed call: back in the queue when the request never reached the bank;
    otherwise left `submitting` (the bank may have it: recovery asks it first)."""
    with atomic():
        query = Withdrawal.objects.filter(id=withdrawal_id, status=Status.SUBMITTING)
        if sent:
            query.update(last_error=error, updated_at=Now())
        else:
            query.update(
                status=status or Status.PENDING, submissions=F("submissions") - 1, last_error=error, updated_at=Now()
            )


def _record_submitted(withdrawal_id, payout: Payout, *, source: str, actor_label: str) -> str:
    if payout.status in ("succeeded", "failed", "cancelled"):
        with atomic():
            Withdrawal.objects.filter(id=withdrawal_id, status__in=[Status.SUBMITTING, Status.SUBMITTED]).update(
                bank_status=payout.status, updated_at=Now()
            )
        return _settle_by_payout(withdrawal_id, payout, source=source, actor_label=actor_label)
    with atomic():
        # Conditional: a callback may already have settled it while the answer travelled.
        Withdrawal.objects.filter(id=withdrawal_id, status__in=[Status.SUBMITTING, Status.SUBMITTED]).update(
            status=Status.SUBMITTED,
            submitted_at=Now(),
            bank_status=payout.status,
            last_error="",
            updated_at=Now(),
        )
    return "submitted"


def _send(withdrawal: Withdrawal, *, back_to: str, actor_label: str) -> str:
    """Send the payout of a withdrawal this process marked `submitting`, with no lock held.
    Returns submitted, posted, released, unreachable (not sent; back in the queue) or error
    (sent, answer unknown)."""
    account = withdrawal.bank_account
    try:
        payout = bank_payout_submit(
            reference=str(withdrawal.id),
            amount=withdrawal.amount,
            currency=withdrawal.currency,
            account_number=account.account_number,
            ifsc=account.ifsc,
            holder_name=account.holder_name,
        )
    except BankUnreachable as exc:
        _record_error(withdrawal.id, status=back_to, error=str(exc), sent=False)
        logger.warning("payout not sent: the bank is unreachable", extra={"withdrawal_id": str(withdrawal.id)})
        return "unreachable"
    except BankError as exc:
        _record_error(withdrawal.id, status=None, error=str(exc), sent=True)
        logger.warning(
            "payout sent, answer unknown; recovery will ask the bank",
            extra={"withdrawal_id": str(withdrawal.id), "error": str(exc)},
        )
        return "error"
    return _record_submitted(withdrawal.id, payout, source="the bank's answer to the payout", actor_label=actor_label)


@dataclass
class SubmitRun:
    sent: int = 0
    results: dict[str, int] = field(default_factory=dict)


def withdrawals_submit(*, limit: int = SUBMIT_BATCH_SIZE, budget_seconds: float = RUN_BUDGET_SECONDS) -> SubmitRun:
    """Send up to `limit` pending payouts, one at a time, starting none after
    `budget_seconds`. Stops as soon as the bank's breaker is open (or the bank is
    unreachable): the rest wait, held and pending, and go out on a later run once the bank
    answers again."""
    run = SubmitRun()
    breaker = bank_breaker()
    started = time.monotonic()
    while run.sent < limit and breaker.would_allow() and time.monotonic() - started < budget_seconds:
        withdrawal = _claim_next()
        if withdrawal is None:
            break
        result = _send(withdrawal, back_to=Status.PENDING, actor_label="system:withdrawal_submit")
        run.results[result] = run.results.get(result, 0) + 1
        if result == "unreachable":
            break
        run.sent += 1
    return run


# --- recovery ----------------------------------------------------------------------------


def withdrawal_reconcile(*, withdrawal_id, now: datetime | None = None, actor_label: str = RECOVERY_ACTOR) -> str:
    """Bring one in-flight withdrawal in line with the bank, asking the bank first.

    Returns: settled results (posted, released, already_settled, flagged), submitted (the
    bank had no record and the payout was sent now, or it had it and we recorded it),
    waiting (the bank is still processing), not_in_flight, busy (someone else is on it),
    unreachable or error (the bank could not be asked; tried again next run)."""
    now = now or timezone.now()
    withdrawal = Withdrawal.objects.select_related("bank_account").filter(id=withdrawal_id).first()
    if withdrawal is None or withdrawal.status not in (Status.SUBMITTING, Status.SUBMITTED):
        return "not_in_flight"
    overdue = withdrawal.created_at <= now - timedelta(seconds=settings.WALLET["WITHDRAWAL_TIMEOUT_SECONDS"])
    reference = str(withdrawal.id)
    source = "the bank's status of the payout"
    try:
        payout = bank_payout_status(reference=reference)
        if payout is not None and payout.status == "processing" and overdue:
            source = "the bank's answer to the cancellation"
            payout = bank_payout_cancel(reference=reference)
            if payout is None:
                return _settle_by_payout(
                    withdrawal.id, Payout(reference, "cancelled", {}), source=source, actor_label=actor_label
                )
            return _reconciled(withdrawal, payout, source=source, actor_label=actor_label, timed_out=True)
    except BankUnreachable:
        return "unreachable"
    except BankError as exc:
        logger.warning(
            "the bank could not be asked about a payout", extra={"withdrawal_id": reference, "error": str(exc)}
        )
        return "error"
    if payout is None:
        if overdue:
            # The bank never received it and it is past its time: nothing left the bank.
            return _settle_by_payout(
                withdrawal.id,
                Payout(reference, "cancelled", {}),
                source=source,
                actor_label=actor_label,
                timed_out=True,
            )
        # The bank has no record: the only case in which a payout is sent again.
        claimed = Withdrawal.objects.filter(
            id=withdrawal.id, status=withdrawal.status, updated_at=withdrawal.updated_at
        ).update(status=Status.SUBMITTING, submissions=F("submissions") + 1, updated_at=Now())
        if not claimed:
            return "busy"
        return _send(withdrawal, back_to=withdrawal.status, actor_label=actor_label)
    return _reconciled(withdrawal, payout, source=source, actor_label=actor_label, timed_out=False)


def _reconciled(withdrawal: Withdrawal, payout: Payout, *, source: str, actor_label: str, timed_out: bool) -> str:
    if payout.status == "processing":
        # The bank has it and is working on it: recorded (it may have been `submitting`
        # after a crash), and looked at again after the next recheck interval.
        _record_submitted(withdrawal.id, payout, source=source, actor_label=actor_label)
        return "waiting"
    return _settle_by_payout(
        withdrawal.id,
        payout,
        source=source,
        actor_label=actor_label,
        timed_out=timed_out and payout.status != "succeeded",
    )


@dataclass
class RecoverRun:
    checked: int = 0
    results: dict[str, int] = field(default_factory=dict)


def withdrawals_recover(
    *, now: datetime | None = None, limit: int = RECOVER_BATCH_SIZE, budget_seconds: float = RUN_BUDGET_SECONDS
) -> RecoverRun:
    """Reconcile, with the bank, the withdrawals in flight (submitting or submitted) whose
    last change is older than WITHDRAWAL_RECHECK_SECONDS, oldest first, asking about none
    after `budget_seconds` (the rest are next run's). Stops while the bank's breaker is open."""
    now = now or timezone.now()
    stale_before = now - timedelta(seconds=settings.WALLET["WITHDRAWAL_RECHECK_SECONDS"])
    ids = list(
        Withdrawal.objects.filter(status__in=[Status.SUBMITTING, Status.SUBMITTED], updated_at__lte=stale_before)
        .order_by("updated_at")
        .values_list("id", flat=True)[:limit]
    )
    run = RecoverRun()
    breaker = bank_breaker()
    started = time.monotonic()
    for withdrawal_id in ids:
        if not breaker.would_allow() or time.monotonic() - started >= budget_seconds:
            break
        result = withdrawal_reconcile(withdrawal_id=withdrawal_id, now=now)
        run.checked += 1
        run.results[result] = run.results.get(result, 0) + 1
        if result == "unreachable":
            break
    return run


def withdrawals_recheck(*, withdrawal_ids, actor) -> dict[str, str]:
    """Staff's "re-check with the bank" (admin action): reconcile these withdrawals now,
    whatever their age, and audit each check with its result."""
    results = {}
    for withdrawal_id in withdrawal_ids:
        result = withdrawal_reconcile(withdrawal_id=withdrawal_id, actor_label=actor.email)
        results[str(withdrawal_id)] = result
        with atomic():
            audit_record(
                actor=actor,
                actor_label=actor.email,
                action="withdrawal.recheck",
                target=f"withdrawal:{withdrawal_id}",
                reason="re-checked with the bank from the admin",
                data={"result": result},
            )
    return results


# --- bank callbacks ----------------------------------------------------------------------


@dataclass(frozen=True)
class BankEventResult:
    """How one callback was handled; `error`, when set, is answered after the transaction
    that recorded the event and any review flag committed."""

    result: str
    withdrawal: Withdrawal | None = None
    error: ApiError | None = None


def _event_record(event: dict) -> bool:
    try:
        with transaction.atomic():
            BankEvent.objects.create(id=event["id"], type=event["type"], payload=event)
    except IntegrityError:
        return False
    return True


def _process(event: dict) -> BankEventResult:
    with atomic():
        if not _event_record(event):
            return BankEventResult("duplicate")
        data = event["data"]
        parsed = _parse_uuid(data["reference"])
        withdrawal = _lock(parsed) if parsed else None
        if withdrawal is None:
            # Raised through the transaction, so the event is not recorded: each retry of
            # it gets the same 404 until someone looks.
            raise WithdrawalNotFound("No withdrawal has this reference")
        source = f"bank event {event['id']} ({event['type']})"
        if data["amount"] != withdrawal.amount or data.get("currency", withdrawal.currency) != withdrawal.currency:
            _flag(
                withdrawal,
                reason=(
                    f"{source} reported {data['amount']} {data.get('currency', '')}, the withdrawal is for "
                    f"{withdrawal.amount} {withdrawal.currency}; nothing moved"
                ).replace("  ", " "),
                actor_label=CALLBACK_ACTOR,
                data={"event_id": event["id"], "data": data},
            )
            BankEvent.objects.filter(id=event["id"]).update(withdrawal=withdrawal, outcome="amount_mismatch")
            return BankEventResult(
                "amount_mismatch",
                withdrawal,
                error=AmountMismatch("The amount or currency does not match the withdrawal"),
            )
        result = _settle(
            withdrawal,
            succeeded=event["type"] == EVENT_SUCCEEDED,
            reason=str(data.get("reason") or "the bank rejected the payout"),
            source=source,
            actor_label=CALLBACK_ACTOR,
        )
        BankEvent.objects.filter(id=event["id"]).update(withdrawal=withdrawal, outcome=result)
        if result in ("posted", "released"):
            # The callback is the bank's latest word on the payout: staff see it in the admin.
            said = "succeeded" if event["type"] == EVENT_SUCCEEDED else "failed"
            Withdrawal.objects.filter(id=withdrawal.id).update(bank_status=said, updated_at=Now())
        withdrawal.refresh_from_db()
        return BankEventResult(result, withdrawal)


def bank_event_process(*, event: dict) -> BankEventResult:
    """Apply one verified bank callback (`{id, type, data: {reference, amount, currency?,
    reason?}}`) exactly once. Raises WithdrawalNotFound (404) for an unknown reference,
    recording nothing."""
    return with_retries(lambda: _process(event))
