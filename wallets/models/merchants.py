"""Merchant payments: a merchant's fee, payments from customers to merchants, their refunds,
and cashback campaigns with the cashback they granted.

Money itself lives in the ledger; these rows record what the ledger transactions were for,
and carry the running totals (refunded, fee refunded, cashback spent and reversed) that the
services lock and check. The database keeps those totals inside their bounds with CHECKs, so
a bug cannot refund more than a payment or spend more than a campaign's budget.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from ledger.models import Transaction
from wallets.models.core import Wallet


class MerchantProfile(models.Model):
    """A merchant's own terms. A merchant without a profile, or with no fee of its own, pays
    the fee of the setting WALLET["MERCHANT_FEE_BPS"]."""

    wallet = models.OneToOneField(Wallet, on_delete=models.PROTECT, primary_key=True, related_name="merchant_profile")
    # Basis points (1/100 of a percent) of each payment, 0-10000; NULL: the setting's fee.
    fee_bps = models.PositiveIntegerField(null=True, blank=True, help_text="0-10000; empty for the default fee")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(fee_bps__isnull=True) | Q(fee_bps__gte=0, fee_bps__lte=10_000),
                name="merchant_fee_bps_range",
            ),
        ]
        permissions = [("set_merchant_fee", "Can set a merchant's fee")]

    def __str__(self) -> str:
        return f"{self.wallet_id}: {self.fee_bps if self.fee_bps is not None else 'default'} bps"


class Payment(models.Model):
    """A customer paying a merchant: one ledger transaction of type payment."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # The payment's ledger transaction; refunds name the payment by this id.
    transaction = models.OneToOneField(Transaction, on_delete=models.PROTECT, related_name="merchant_payment")
    customer_wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="payments_made")
    merchant_wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="payments_received")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    fee = models.BigIntegerField()
    fee_bps = models.PositiveIntegerField()
    # Running totals of this payment's refunds; only payment_refund changes them, under this
    # row's lock.
    refunded = models.BigIntegerField(default=0)
    fee_refunded = models.BigIntegerField(default=0)
    order_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [
            models.Index(fields=["merchant_wallet", "-created_at"], name="merchant_payment_by_merchant"),
            models.Index(fields=["customer_wallet", "-created_at"], name="merchant_payment_by_customer"),
            models.Index(fields=["-created_at"], name="merchant_payment_recent"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="merchant_payment_amount_positive"),
            models.CheckConstraint(condition=Q(fee__gte=0, fee__lte=F("amount")), name="payment_fee_in_amount"),
            models.CheckConstraint(
                condition=Q(refunded__gte=0, refunded__lte=F("amount")), name="payment_refunds_within_amount"
            ),
            models.CheckConstraint(
                condition=Q(fee_refunded__gte=0, fee_refunded__lte=F("fee")), name="payment_fee_refunds_within_fee"
            ),
            models.CheckConstraint(condition=~Q(customer_wallet=F("merchant_wallet")), name="payment_not_to_self"),
        ]

    def __str__(self) -> str:
        return f"payment {self.transaction_id} ({self.amount})"

    @property
    def refundable(self) -> int:
        return self.amount - self.refunded


class Refund(models.Model):
    """All or part of a payment given back: one ledger transaction of type refund, and, when
    the payment earned cashback, a cashback reversal transaction beside it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    payment = models.ForeignKey(Payment, on_delete=models.PROTECT, related_name="refunds")
    transaction = models.OneToOneField(Transaction, on_delete=models.PROTECT, related_name="merchant_refund")
    amount = models.BigIntegerField()
    # The part of the payment's fee given back from the fees account.
    fee_refunded = models.BigIntegerField(default=0)
    cashback_reversed = models.BigIntegerField(default=0)
    cashback_transaction = models.OneToOneField(
        Transaction, on_delete=models.PROTECT, null=True, blank=True, related_name="cashback_reversal_of"
    )
    reason = models.CharField(max_length=280, blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["-created_at"], name="refund_recent")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="refund_amount_positive"),
            models.CheckConstraint(
                condition=Q(fee_refunded__gte=0, fee_refunded__lte=F("amount")), name="refund_fee_within_amount"
            ),
            models.CheckConstraint(condition=Q(cashback_reversed__gte=0), name="refund_cashback_not_negative"),
        ]

    def __str__(self) -> str:
        return f"refund {self.id} ({self.amount})"


class CashbackCampaign(models.Model):
    """A share of qualifying payments credited to the customer from the cashback pool, capped
    per payment and by a total budget, within a time window, for one merchant or all."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=120)
    bps = models.PositiveIntegerField(help_text="Basis points of the payment, 1-10000")
    cap_per_payment = models.BigIntegerField(help_text="Minor units")
    budget = models.BigIntegerField(help_text="Minor units: the most this campaign ever grants")
    # Cashback granted so far; only cashback_grant raises it, under this row's lock.
    # Reversals return money to the pool but do not reopen the budget.
    spent = models.BigIntegerField(default=0)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    # NULL: payments to every merchant qualify.
    merchant_wallet = models.ForeignKey(
        Wallet, on_delete=models.PROTECT, null=True, blank=True, related_name="cashback_campaigns"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["-created_at", "-id"], name="campaign_recent")]
        constraints = [
            models.CheckConstraint(condition=Q(bps__gte=1, bps__lte=10_000), name="campaign_bps_range"),
            models.CheckConstraint(condition=Q(cap_per_payment__gt=0), name="campaign_cap_positive"),
            models.CheckConstraint(condition=Q(budget__gt=0), name="campaign_budget_positive"),
            models.CheckConstraint(condition=Q(spent__gte=0, spent__lte=F("budget")), name="campaign_spent_in_budget"),
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="campaign_window_valid"),
            models.CheckConstraint(condition=Q(status__in=["active", "paused"]), name="campaign_status_valid"),
        ]
        permissions = [("manage_cashbackcampaign", "Can create, pause and resume cashback campaigns")]

    def __str__(self) -> str:
        return self.name

    @property
    def remaining(self) -> int:
        return self.budget - self.spent


class CashbackGrant(models.Model):
    """The cashback one payment earned: its own ledger transaction (cashback pool -> customer),
    posted in the same database transaction as the payment."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    campaign = models.ForeignKey(CashbackCampaign, on_delete=models.PROTECT, related_name="grants")
    payment = models.OneToOneField(Payment, on_delete=models.PROTECT, related_name="cashback")
    transaction = models.OneToOneField(Transaction, on_delete=models.PROTECT, related_name="cashback_grant")
    amount = models.BigIntegerField()
    # Taken back by refunds so far, under the payment row's lock.
    reversed = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["-created_at"], name="cashback_grant_recent")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="cashback_grant_positive"),
            models.CheckConstraint(
                condition=Q(reversed__gte=0, reversed__lte=F("amount")), name="cashback_reversed_within_grant"
            ),
        ]

    def __str__(self) -> str:
        return f"cashback {self.amount} on {self.payment_id}"
