"""Cashback campaigns: staff create, pause and resume them; a qualifying payment earns a
share of its amount, credited to the customer from the cashback pool as a ledger transaction
of its own (type cashback) in the same database transaction as the payment; a refund takes
it back in proportion.

Rules, and where each is enforced:
- The budget: a payment locks the campaign row (SELECT ... FOR UPDATE) before any ledger
  account, computes the cashback from the locked row's `spent`, and raises `spent` in the
  same transaction. Concurrent payments queue on the row, so together they never grant more
  than the budget; the CHECK spent <= budget is the database's own guard.
- The pool never goes negative: the cashback command's posting check refuses it when the
  locked pool account holds less than the cashback. A refused cashback leaves the payment
  standing, without cashback (the pool is a system account, which the ledger itself lets go
  negative).
- Rounding: floor(amount * bps / 10000), then capped per payment and by what is left of the
  budget. Reversals are computed on cumulative refunded totals (see cashback_to_reverse), so
  rounding never takes back more than was granted and a full refund takes back all of it.

Lock order: campaign row, then ledger accounts (ascending id, ledger.posting.accounts_lock).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from datetime import datetime

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from ledger.audit import audit_record
from ledger.models import Account
from ledger.outbox import outbox_emit
from ledger.posting import Leg, PostingCommand, Rejected, atomic, transactions_post
from wallets.limits import balance_ceiling_check
from wallets.models import CashbackCampaign, CashbackGrant, Payment, Wallet
from walletsite.errors import CampaignNotFound, InsufficientFunds, MerchantNotFound, ValidationFailed

logger = logging.getLogger("wallets.cashback")


def cashback_amount(*, campaign: CashbackCampaign, amount: int) -> int:
    """The cashback a payment of `amount` earns: floor(amount * bps / 10000), at most the cap
    per payment and what is left of the budget (the campaign row must be locked)."""
    return max(0, min(amount * campaign.bps // 10_000, campaign.cap_per_payment, campaign.budget - campaign.spent))


def cashback_to_reverse(*, payment_amount: int, granted: int, reversed_so_far: int, refunded_after: int) -> int:
    """How much of a payment's cashback this refund takes back: the share of the cashback
    that the payment's refunded total (after this refund) bears, floor-rounded, and all of
    it once the payment is fully refunded; less what earlier refunds took back."""
    target = granted if refunded_after >= payment_amount else granted * refunded_after // payment_amount
    return max(0, target - reversed_so_far)


def campaign_lock_best(*, merchant: Wallet, now: datetime | None = None) -> CashbackCampaign | None:
    """The running campaign that pays the most for a payment to this merchant, locked FOR
    UPDATE. Runs first in the payment's transaction (lock order: campaign row, then accounts).

    The row is locked and then re-read as it is after the lock (PostgreSQL returns the newest
    version), so its `spent` includes every payment that committed before this one got the
    lock."""
    now = now or timezone.now()
    return (
        CashbackCampaign.objects.select_for_update(of=("self",))
        .filter(
            Q(merchant_wallet__isnull=True) | Q(merchant_wallet_id=merchant.id),
            status=CashbackCampaign.Status.ACTIVE,
            starts_at__lte=now,
            ends_at__gt=now,
            spent__lt=F("budget"),
        )
        .order_by("-bps", "created_at", "id")
        .first()
    )


def cashback_grant(
    *,
    campaign: CashbackCampaign,
    payment: Payment,
    customer: Wallet,
    pool: Account,
    accounts: Mapping[int, Account],
) -> CashbackGrant | None:
    """Credit the customer the campaign's cashback on `payment`, from the pool, inside the
    payment's transaction, with the campaign row and the pool and customer accounts already
    locked. None when the payment earns nothing, or the pool cannot pay, or the customer's
    balance ceiling refuses it: the payment stands without cashback."""
    amount = cashback_amount(campaign=campaign, amount=payment.amount)
    if amount <= 0:
        return None

    def check(locked: Mapping[int, Account]) -> None:
        if locked[pool.id].balance < amount:
            raise InsufficientFunds("The cashback pool does not hold enough money for this cashback")
        balance_ceiling_check(wallet=customer, amount=amount, accounts=locked)

    (result,) = transactions_post(
        commands=[
            PostingCommand(
                type="cashback",
                legs=(Leg(pool.id, -amount), Leg(customer.account_id, amount)),
                note=f"Cashback: {campaign.name}"[:280],
                reference=f"payment:{payment.id}",
                check=check,
            )
        ],
        accounts=accounts,
    )
    if isinstance(result, Rejected):
        logger.info(
            "cashback not granted",
            extra={"campaign_id": str(campaign.id), "payment_id": str(payment.id), "code": result.error.code},
        )
        return None
    campaign.spent += amount
    campaign.save(update_fields=["spent"])
    grant = CashbackGrant.objects.create(
        campaign=campaign, payment=payment, transaction=result.transaction, amount=amount
    )
    outbox_emit(
        type="cashback.granted",
        payload={
            "transaction_id": str(result.transaction.id),
            "wallet_ids": [str(customer.id)],
            "amount": amount,
            "currency": payment.currency,
            "campaign_id": str(campaign.id),
            "payment_id": str(payment.id),
        },
    )
    return grant


def _merchant_wallet(ref: str | None) -> Wallet | None:
    if not ref:
        return None
    from wallets.payments import merchant_resolve

    return merchant_resolve(ref=ref)


def campaign_create(
    *,
    actor,
    name: str,
    bps: int,
    cap_per_payment: int,
    budget: int,
    starts_at: datetime,
    ends_at: datetime,
    merchant: str | None = None,
) -> CashbackCampaign:
    """A new campaign, active from `starts_at` to `ends_at`. Money comes from the cashback
    pool, which staff fund through an approved adjustment; a campaign itself moves none."""
    if not name.strip():
        raise ValidationFailed("name: Must not be blank", errors=[{"field": "name", "message": "Must not be blank"}])
    if not 1 <= bps <= 10_000:
        raise ValidationFailed("bps: Must be 1-10000", errors=[{"field": "bps", "message": "Must be 1-10000"}])
    if ends_at <= starts_at:
        raise ValidationFailed(
            "ends_at: Must be after starts_at", errors=[{"field": "ends_at", "message": "Must be after starts_at"}]
        )
    try:
        merchant_wallet = _merchant_wallet(merchant)
    except MerchantNotFound:
        raise ValidationFailed(
            "merchant: Not a merchant's wallet handle or id",
            errors=[{"field": "merchant", "message": "Not a merchant's wallet handle or id"}],
        ) from None
    # Not a money movement, so not a durable block: the admin's add form already runs in a
    # transaction of its own, which this one joins.
    with transaction.atomic():
        campaign = CashbackCampaign.objects.create(
            name=name.strip(),
            bps=bps,
            cap_per_payment=cap_per_payment,
            budget=budget,
            starts_at=starts_at,
            ends_at=ends_at,
            merchant_wallet=merchant_wallet,
            created_by=actor,
        )
        _audit(actor=actor, campaign=campaign, action="campaign.create", reason=f"created campaign {campaign.name}")
    return campaign


def _audit(*, actor, campaign: CashbackCampaign, action: str, reason: str) -> None:
    audit_record(
        actor=actor,
        actor_label=getattr(actor, "email", None) or "system",
        action=action,
        target=f"campaign:{campaign.id}",
        reason=reason,
        data={
            "name": campaign.name,
            "bps": campaign.bps,
            "cap_per_payment": campaign.cap_per_payment,
            "budget": campaign.budget,
            "spent": campaign.spent,
            "status": campaign.status,
        },
    )


def _set_status(*, campaign_id, actor, status: str, action: str, reason: str) -> CashbackCampaign:
    try:
        campaign_uuid = uuid.UUID(str(campaign_id))
    except ValueError:
        raise CampaignNotFound("No cashback campaign has this id") from None
    with atomic():
        # The campaign row is the only lock: payments take it before any account, so a
        # payment sees the campaign either running or paused, never changing under it.
        campaign = CashbackCampaign.objects.select_for_update().filter(id=campaign_uuid).first()
        if campaign is None:
            raise CampaignNotFound("No cashback campaign has this id")
        if campaign.status != status:
            campaign.status = status
            campaign.save(update_fields=["status"])
            _audit(actor=actor, campaign=campaign, action=action, reason=reason)
    return campaign


def campaign_pause(*, campaign_id, actor, reason: str = "") -> CashbackCampaign:
    """Stop a campaign granting cashback; pausing a paused campaign changes nothing."""
    return _set_status(
        campaign_id=campaign_id,
        actor=actor,
        status=CashbackCampaign.Status.PAUSED,
        action="campaign.pause",
        reason=reason.strip() or "paused the campaign",
    )


def campaign_resume(*, campaign_id, actor, reason: str = "") -> CashbackCampaign:
    """Let a paused campaign grant cashback again (within its window and budget)."""
    return _set_status(
        campaign_id=campaign_id,
        actor=actor,
        status=CashbackCampaign.Status.ACTIVE,
        action="campaign.resume",
        reason=reason.strip() or "resumed the campaign",
    )
