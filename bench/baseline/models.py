"""The baseline's tables: a wallet holds its balance and PIN, a transaction has two entries.

Money is conserved as in the service: a system wallet (the funding wallet, no user) is where
seeded money comes from, so all balances together sum to zero.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Wallet(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="wallet"
    )
    handle = models.CharField(max_length=64, unique=True)
    currency = models.CharField(max_length=3, default="INR")
    balance = models.BigIntegerField(default=0)
    # The funding wallet: the only one whose balance may go below zero.
    is_system = models.BooleanField(default=False)
    # HMAC-SHA256(pepper, "<user id>:<pin>") in hex, and the bcrypt variant's hash (cost 12).
    pin_digest = models.CharField(max_length=64, blank=True, default="")
    pin_bcrypt = models.CharField(max_length=60, blank=True, default="")
    pin_failures = models.IntegerField(default=0)
    pin_locked_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=Q(is_system=True) | Q(balance__gte=0), name="baseline_balance_not_negative"
            )
        ]

    def __str__(self) -> str:
        return self.handle


class Transaction(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=32, default="transfer")
    note = models.CharField(max_length=280, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class Entry(models.Model):
    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="entries")
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="entries")
    # Credit positive, debit negative.
    amount = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"entry {self.id}: {self.amount:+d} on {self.wallet_id}"


class IdempotencyKey(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    response_status = models.IntegerField()
    response_body = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="baseline_idempotency_key_per_user")]

    def __str__(self) -> str:
        return f"{self.key} ({self.response_status})"
