"""Wallets, the idempotency record of money-moving requests, and money in through the
payment gateway (payment attempts and the gateway's webhook events)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from ledger.models import Account, Transaction


class Wallet(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        FROZEN = "frozen"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="wallet")
    account = models.OneToOneField(Account, on_delete=models.PROTECT, related_name="wallet")
    # UPI-like address others pay: `name@wallet`, lower case.
    handle = models.CharField(max_length=64, unique=True)
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    status_reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(status__in=["active", "frozen"]), name="wallet_status_valid"),
            models.CheckConstraint(
                condition=Q(handle__regex=r"^[a-z0-9][a-z0-9._-]{0,54}@wallet$"), name="wallet_handle_format"
            ),
        ]
        permissions = [("freeze_wallet", "Can freeze and unfreeze wallets")]

    def __str__(self) -> str:
        return self.handle


class IdempotencyKey(models.Model):
    """The answer to a money-moving request, stored in the same database transaction as the
    money movement, so a retry with the same key replays it instead of moving money again."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    key = models.CharField(max_length=255)
    # SHA-256 of the method, route and body (the PIN taken out), to refuse a different
    # request under a used key.
    request_hash = models.CharField(max_length=64)
    response_status = models.IntegerField()
    response_body = models.JSONField()
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_per_user")]
        indexes = [models.Index(fields=["created_at"], name="idempotency_created")]

    def __str__(self) -> str:
        return f"{self.key} ({self.response_status})"


class PaymentAttempt(models.Model):
    """One add-money: created pending, then succeeded (credited once), failed or expired."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        EXPIRED = "expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="payment_attempts")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    gateway_reference = models.CharField(max_length=255, blank=True, default="")
    # The ledger transaction that credited the wallet, once.
    transaction = models.OneToOneField(
        Transaction, on_delete=models.PROTECT, null=True, blank=True, related_name="payment_attempt"
    )
    flagged_for_review = models.BooleanField(default=False)
    review_reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())
    expires_at = models.DateTimeField()
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="payment_amount_positive"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "succeeded", "failed", "expired"]), name="payment_status_valid"
            ),
            # Succeeded exactly when credited.
            models.CheckConstraint(
                condition=Q(status="succeeded", transaction__isnull=False)
                | (~Q(status="succeeded") & Q(transaction__isnull=True)),
                name="payment_succeeded_iff_credited",
            ),
        ]
        indexes = [
            models.Index(fields=["expires_at"], name="payment_pending_expiry", condition=Q(status="pending")),
            models.Index(fields=["wallet", "-created_at"], name="payment_by_wallet"),
            # The admin's newest-first list, with or without its status filter.
            models.Index(fields=["-created_at"], name="payment_recent"),
            models.Index(fields=["status", "-created_at"], name="payment_by_status"),
            models.Index(fields=["-created_at"], name="payment_flagged", condition=Q(flagged_for_review=True)),
        ]

    def __str__(self) -> str:
        return f"payment {self.id} ({self.status})"


class GatewayEvent(models.Model):
    """Every gateway webhook event id seen. Inserted first: a duplicate delivery hits the
    primary key and changes nothing."""

    id = models.CharField(max_length=255, primary_key=True)
    type = models.CharField(max_length=64)
    payment_attempt = models.ForeignKey(
        PaymentAttempt, on_delete=models.PROTECT, null=True, blank=True, related_name="gateway_events"
    )
    payload = models.JSONField()
    received_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"{self.type} {self.id}"
