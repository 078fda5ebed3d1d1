"""Staff money operations with maker-checker: a manual adjustment (or cashback-pool funding)
made by one staff member and posted only when a different one approves it."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from ledger.models import Account, Transaction


class Adjustment(models.Model):
    class Status(models.TextChoices):
        PENDING_APPROVAL = "pending_approval"
        POSTED = "posted"
        REJECTED = "rejected"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Ledger accounts: a customer wallet's or the system accounts adjustments and
    # cashback_pool (wallets.adjustments decides which may be named).
    from_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    to_account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.TextField()
    status = models.CharField(max_length=32, choices=Status.choices, default=Status.PENDING_APPROVAL)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(db_default=Now())
    # Who approved or rejected it, when and (for a rejection) why.
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True, default="")
    # The ledger transaction that posted it, once approved.
    transaction = models.OneToOneField(
        Transaction, on_delete=models.PROTECT, null=True, blank=True, related_name="adjustment"
    )

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="adjustment_amount_positive"),
            models.CheckConstraint(condition=~Q(from_account=F("to_account")), name="adjustment_two_accounts"),
            models.CheckConstraint(
                condition=Q(status__in=["pending_approval", "posted", "rejected"]), name="adjustment_status_valid"
            ),
            models.CheckConstraint(condition=~Q(reason=""), name="adjustment_has_reason"),
            # Posted exactly when it has its ledger transaction.
            models.CheckConstraint(
                condition=Q(status="posted", transaction__isnull=False)
                | (~Q(status="posted") & Q(transaction__isnull=True)),
                name="adjustment_posted_iff_transaction",
            ),
            # Decided exactly when no longer pending.
            models.CheckConstraint(
                condition=Q(status="pending_approval", decided_by__isnull=True, decided_at__isnull=True)
                | (~Q(status="pending_approval") & Q(decided_by__isnull=False, decided_at__isnull=False)),
                name="adjustment_decided_iff_not_pending",
            ),
            # Maker-checker, in the database too: nobody posts their own adjustment.
            models.CheckConstraint(
                condition=~Q(status="posted") | ~Q(decided_by=F("created_by")),
                name="adjustment_checker_not_maker",
            ),
        ]
        indexes = [
            # The approval queue, oldest first, and the newest-first list of every adjustment.
            models.Index(fields=["created_at"], name="adjustment_pending", condition=Q(status="pending_approval")),
            models.Index(fields=["-created_at", "-id"], name="adjustment_recent"),
        ]
        permissions = [
            ("make_adjustment", "Can create manual adjustments (maker)"),
            ("approve_adjustment", "Can approve or reject adjustments of other staff (checker)"),
        ]

    def __str__(self) -> str:
        return f"adjustment {self.amount} ({self.status})"
