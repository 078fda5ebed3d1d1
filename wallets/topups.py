"""Money in through the payment gateway (API.md "Money in: the payment gateway").

Add-money creates a pending payment attempt; nothing is credited until the gateway's signed
webhook says the payment succeeded. `gateway_event_process` handles one verified event in
one durable database transaction:

1. INSERT the event id first (`GatewayEvent`'s primary key). A redelivered event hits the
   key inside a savepoint and is answered `duplicate` without touching anything else;
   concurrent copies of one event queue on that key until the first commits.
2. Lock the payment attempt FOR NO KEY UPDATE. Every event for one payment, whatever its
   event id, is decided under this lock against the attempt's committed status, so a second
   success sees `succeeded` and credits nothing.
3. Lock the gateway clearing account and the wallet's account (ascending id, in
   `ledger.posting.accounts_lock`) and post the deposit. The attempt's one-to-one link to
   its ledger transaction and the unique credit reference (migration
   0003_topup_credit_once) make a second credit of one attempt impossible in the database
   too, whatever the Python above does.

Lock order, for every path here: gateway event id, then the payment attempt row, then ledger
accounts by ascending id. Nothing locks a payment attempt while holding a ledger account.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Subquery
from django.db.models.functions import Now
from django.utils import timezone

from ledger.audit import audit_record
from ledger.outbox import outbox_emit
from ledger.posting import Leg, PostingCommand, accounts_lock, atomic, system_account, transaction_post, with_retries
from wallets.models import GatewayEvent, PaymentAttempt, Wallet
from walletsite.errors import AmountMismatch, ApiError, PaymentNotFound, WalletFrozen

logger = logging.getLogger("wallets.topups")

EVENT_SUCCEEDED = "payment.succeeded"
EVENT_FAILED = "payment.failed"
EVENT_TYPES = (EVENT_SUCCEEDED, EVENT_FAILED)
CLEARING_ACCOUNT = "gateway_clearing"
# Who flagged an attempt, in the audit log.
WEBHOOK_ACTOR = "system:gateway_webhook"
EXPIRE_BATCH_SIZE = 500

Status = PaymentAttempt.Status


def credit_reference(attempt_id) -> str:
    """The ledger transaction reference of an attempt's credit; unique in the database."""
    return f"payment_attempt:{attempt_id}"


def checkout_url(attempt: PaymentAttempt) -> str | None:
    """Where the customer pays. Only the sandbox gateway is built in: without it there is
    no checkout to send the customer to, and the attempt has none (null)."""
    if not settings.WALLET["GATEWAY_SANDBOX"]:
        return None
    return f"{settings.WALLET['PUBLIC_URL']}/sandbox/checkout/{attempt.id}"


def payment_attempt_out(attempt: PaymentAttempt) -> dict:
    """The API's view of an attempt (add-money's 201 body and GET /wallet/payments/{id})."""
    return {
        "payment_id": str(attempt.id),
        "status": attempt.status,
        "amount": attempt.amount,
        "currency": attempt.currency,
        "created_at": attempt.created_at.isoformat().replace("+00:00", "Z"),
        "expires_at": attempt.expires_at.isoformat().replace("+00:00", "Z"),
        # Only a pending attempt can still be paid.
        "checkout_url": checkout_url(attempt) if attempt.status == Status.PENDING else None,
    }


def payment_attempt_create(*, wallet: Wallet, amount: int) -> PaymentAttempt:
    """A pending attempt to add `amount` to `wallet`, payable until the configured TTL ends.

    Runs inside the caller's transaction (add-money's idempotency record commits with it).
    A frozen wallet is refused (423) up front so the customer is not sent to pay for money
    the wallet could not use; should it be frozen while the customer pays, the webhook still
    credits it (the gateway has taken the money) and flags the attempt."""
    status = Wallet.objects.filter(id=wallet.id).values_list("status", flat=True).get()
    if status == Wallet.Status.FROZEN:
        raise WalletFrozen("The wallet is frozen")
    ttl = settings.WALLET["PAYMENT_ATTEMPT_TTL_SECONDS"]
    return PaymentAttempt.objects.create(
        wallet=wallet,
        amount=amount,
        currency=wallet.currency,
        expires_at=timezone.now() + timedelta(seconds=ttl),
    )


def payment_attempt_get(*, wallet: Wallet, payment_id: str) -> PaymentAttempt:
    """The caller's attempt; 404 payment_not_found for a malformed id, an unknown one or
    another wallet's (the same answer, so ids of others cannot be probed)."""
    try:
        attempt_id = uuid.UUID(str(payment_id))
    except ValueError:
        attempt_id = None
    attempt = PaymentAttempt.objects.filter(id=attempt_id, wallet=wallet).first() if attempt_id else None
    if attempt is None:
        raise PaymentNotFound("No payment attempt with this id belongs to you")
    return attempt


@dataclass(frozen=True)
class GatewayEventResult:
    """How one event was handled. `error`, when set, is answered instead of 200, after the
    transaction that recorded the event (and any review flag) committed."""

    result: str
    payment_attempt: PaymentAttempt | None = None
    error: ApiError | None = None


def _event_record(event: dict) -> bool:
    """Insert the event id; False when it was seen before. A savepoint keeps the outer
    transaction usable after the primary key refuses a duplicate."""
    try:
        with transaction.atomic():
            GatewayEvent.objects.create(id=event["id"], type=event["type"], payload=event)
    except IntegrityError:
        return False
    return True


def _attempt_lock(payment_id: str) -> PaymentAttempt | None:
    try:
        attempt_id = uuid.UUID(str(payment_id))
    except ValueError:
        return None
    return (
        PaymentAttempt.objects.select_for_update(of=("self",), no_key=True)
        .select_related("wallet")
        .filter(id=attempt_id)
        .first()
    )


def _flag(attempt: PaymentAttempt, *, reason: str, event: dict) -> None:
    """Mark the attempt for an operator to look at, with the reason appended (an attempt
    may collect several), and audit it. The caller saves the attempt."""
    attempt.flagged_for_review = True
    attempt.review_reason = f"{attempt.review_reason}\n{reason}" if attempt.review_reason else reason
    audit_record(
        actor=None,
        actor_label=WEBHOOK_ACTOR,
        action="payment_attempt.flag",
        target=f"payment_attempt:{attempt.id}",
        reason=reason,
        data={"event_id": event["id"], "event_type": event["type"], "data": event["data"]},
    )
    logger.warning(
        "payment attempt flagged for review",
        extra={"payment_id": str(attempt.id), "event_id": event["id"], "reason": reason},
    )


def _save(attempt: PaymentAttempt, *fields: str) -> None:
    attempt.updated_at = Now()
    attempt.save(update_fields=[*fields, "updated_at"])


def _credit(attempt: PaymentAttempt, *, event: dict) -> GatewayEventResult:
    """Post the deposit for a succeeded payment and mark the attempt succeeded."""
    data = event["data"]
    reasons = []
    if attempt.status in (Status.FAILED, Status.EXPIRED):
        reasons.append(f"payment.succeeded arrived after the attempt was {attempt.status}; credited once")
    clearing = system_account(CLEARING_ACCOUNT)
    wallet = attempt.wallet
    # Ascending id (accounts_lock). A freeze takes the wallet's account lock before it
    # changes the status, so the status read under this lock stays true until commit.
    accounts = accounts_lock(account_ids=[clearing.id, wallet.account_id])
    if Wallet.objects.filter(id=wallet.id, status=Wallet.Status.FROZEN).exists():
        # The gateway has taken the customer's money: refusing the credit would lose it.
        reasons.append("credited while the wallet is frozen")
    posted = transaction_post(
        command=PostingCommand(
            type="deposit",
            legs=[Leg(clearing.id, -attempt.amount), Leg(wallet.account_id, attempt.amount)],
            reference=credit_reference(attempt.id),
        ),
        accounts=accounts,
    )
    attempt.status = Status.SUCCEEDED
    attempt.transaction = posted.transaction
    attempt.gateway_reference = data["gateway_reference"]
    for reason in reasons:
        _flag(attempt, reason=reason, event=event)
    _save(attempt, "status", "transaction", "gateway_reference", "flagged_for_review", "review_reason")
    outbox_emit(
        type=EVENT_SUCCEEDED,
        payload={
            "payment_id": str(attempt.id),
            "wallet_id": str(wallet.id),
            "wallet_ids": [str(wallet.id)],
            "amount": attempt.amount,
            "currency": attempt.currency,
            "transaction_id": str(posted.transaction.id),
            "gateway_reference": attempt.gateway_reference,
        },
    )
    return GatewayEventResult("credited", attempt)


def _succeeded(attempt: PaymentAttempt, *, event: dict) -> GatewayEventResult:
    if attempt.status != Status.SUCCEEDED:
        return _credit(attempt, event=event)
    reference = event["data"]["gateway_reference"]
    if reference != attempt.gateway_reference:
        # Another success under a new gateway reference may mean the customer was charged
        # twice for one attempt: still credited once, but someone must look.
        _flag(
            attempt,
            reason=f"a second payment.succeeded with another gateway reference ({reference}); not credited again",
            event=event,
        )
        _save(attempt, "flagged_for_review", "review_reason")
    return GatewayEventResult("already_credited", attempt)


def _failed(attempt: PaymentAttempt, *, event: dict) -> GatewayEventResult:
    if attempt.status == Status.PENDING:
        attempt.status = Status.FAILED
        attempt.gateway_reference = event["data"]["gateway_reference"]
        _save(attempt, "status", "gateway_reference")
        return GatewayEventResult("failed", attempt)
    if attempt.status == Status.SUCCEEDED:
        # The gateway contradicts itself; the credit stands (money is never taken back on
        # a webhook's word) and an operator decides.
        _flag(attempt, reason="payment.failed arrived after the attempt succeeded; nothing moved", event=event)
        _save(attempt, "flagged_for_review", "review_reason")
        return GatewayEventResult("flagged", attempt)
    # Already failed or expired: nothing left to change.
    return GatewayEventResult("ignored", attempt)


def _process(event: dict) -> GatewayEventResult:
    with atomic():
        if not _event_record(event):
            return GatewayEventResult("duplicate")
        data = event["data"]
        attempt = _attempt_lock(data["payment_id"])
        if attempt is None:
            # Raised through the transaction, so the event is not recorded: the gateway
            # retries, and each retry gets the same 404 until someone looks.
            raise PaymentNotFound("No payment attempt has this payment_id")
        GatewayEvent.objects.filter(id=event["id"]).update(payment_attempt=attempt)
        if data["amount"] != attempt.amount or data["currency"] != attempt.currency:
            reason = (
                f"{event['type']} reported {data['amount']} {data['currency']}, "
                f"the attempt is for {attempt.amount} {attempt.currency}; nothing credited"
            )
            _flag(attempt, reason=reason, event=event)
            _save(attempt, "flagged_for_review", "review_reason")
            # Returned, not raised: the flag and the event must commit with a 422 answer.
            return GatewayEventResult(
                "amount_mismatch",
                attempt,
                error=AmountMismatch("The amount or currency does not match the payment attempt"),
            )
        if event["type"] == EVENT_SUCCEEDED:
            return _succeeded(attempt, event=event)
        return _failed(attempt, event=event)


def gateway_event_process(*, event: dict) -> GatewayEventResult:
    """Apply one gateway event (already verified and validated: `{id, type, data:
    {payment_id, amount, currency, gateway_reference}}`) exactly once, in one durable
    transaction, retried on a deadlock or serialization failure. Raises PaymentNotFound
    (404) for an unknown payment, recording nothing."""
    return with_retries(lambda: _process(event))


def payment_attempts_expire(*, now: datetime | None = None) -> int:
    """Mark pending attempts whose time ran out as expired; return how many.

    In batches, each its own short transaction. Rows a webhook holds locked are skipped
    (SKIP LOCKED): that webhook is deciding the attempt now, and if it leaves it pending the
    next run expires it. Only pending attempts are touched, never a succeeded one."""
    now = now or timezone.now()
    total = 0
    while True:
        with atomic():
            due = (
                PaymentAttempt.objects.filter(status=Status.PENDING, expires_at__lte=now)
                .order_by("expires_at")
                .select_for_update(skip_locked=True)
                .values("id")[:EXPIRE_BATCH_SIZE]
            )
            count = PaymentAttempt.objects.filter(id__in=Subquery(due), status=Status.PENDING).update(
                status=Status.EXPIRED, updated_at=Now()
            )
        total += count
        if count < EXPIRE_BATCH_SIZE:
            return total
