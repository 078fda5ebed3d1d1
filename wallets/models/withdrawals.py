"""Money out: bank accounts (payout destinations), withdrawals, the bank's callback events,
and the sandbox bank's own record of the payouts it received."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from ledger.models import Hold, Transaction
from wallets.models.core import Wallet


class BankAccount(models.Model):
    """A payout destination of one wallet. The full account number is kept (a payout needs
    it) but never shown: the API and the admin show `last4`, and `__str__` is masked so no
    log line or error message can carry it. Duplicates are found by `fingerprint`, a keyed
    hash of the number and IFSC, so the uniqueness check never compares the number itself."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="bank_accounts")
    account_number = models.CharField(max_length=18)
    last4 = models.CharField(max_length=4)
    ifsc = models.CharField(max_length=11)
    holder_name = models.CharField(max_length=140)
    fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["wallet", "fingerprint"], name="bank_account_once_per_wallet"),
            models.CheckConstraint(condition=Q(account_number__regex=r"^[0-9]{9,18}$"), name="bank_account_number"),
            models.CheckConstraint(condition=Q(ifsc__regex=r"^[A-Z]{4}0[A-Z0-9]{6}$"), name="bank_account_ifsc"),
        ]
        indexes = [models.Index(fields=["wallet", "-created_at"], name="bank_account_by_wallet")]

    def __repr__(self) -> str:
        return f"<BankAccount {self.id} ****{self.last4}>"

    def __str__(self) -> str:
        return f"****{self.last4} ({self.ifsc})"

    @property
    def masked_number(self) -> str:
        return f"****{self.last4}"


class Withdrawal(models.Model):
    """Money out to a bank account. Its hold reserves the amount from the request on; the
    bank's answer posts the hold (status succeeded) or releases it (failed).

    Internal states on the way: pending (held, not yet sent), submitting (a worker is
    sending it, or sent it and the answer was lost: the bank is asked before anything is
    sent again), submitted (the bank has it). The API shows all three as `pending`."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUBMITTING = "submitting"
        SUBMITTED = "submitted"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    UNSETTLED = (Status.PENDING, Status.SUBMITTING, Status.SUBMITTED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="withdrawals")
    bank_account = models.ForeignKey(BankAccount, on_delete=models.PROTECT, related_name="withdrawals")
    hold = models.OneToOneField(Hold, on_delete=models.PROTECT, related_name="withdrawal")
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # The ledger transaction that posted the hold, once the bank paid.
    transaction = models.OneToOneField(
        Transaction, on_delete=models.PROTECT, null=True, blank=True, related_name="withdrawal"
    )
    # How many times a payout request was sent to the bank (each with the same reference).
    submissions = models.IntegerField(default=0)
    submitted_at = models.DateTimeField(null=True, blank=True)
    # The bank's last known word on the payout (processing, succeeded, failed, cancelled).
    bank_status = models.CharField(max_length=16, blank=True, default="")
    failure_reason = models.TextField(blank=True, default="")
    last_error = models.TextField(blank=True, default="")
    flagged_for_review = models.BooleanField(default=False)
    review_reason = models.TextField(blank=True, default="")
    # Where the withdrawal sits in the wallet's history while it has no entry of its own
    # (pending, or released): right after the account's entry with this id (0: before any),
    # read under the account's lock when the hold was placed; and the posted balance then.
    # See wallets.history.
    history_after_entry_id = models.BigIntegerField(default=0)
    history_balance = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    settled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="withdrawal_amount_positive"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "submitting", "submitted", "succeeded", "failed"]),
                name="withdrawal_status_valid",
            ),
            # Succeeded exactly when the hold was posted.
            models.CheckConstraint(
                condition=Q(status="succeeded", transaction__isnull=False)
                | (~Q(status="succeeded") & Q(transaction__isnull=True)),
                name="withdrawal_succeeded_iff_posted",
            ),
        ]
        indexes = [
            # The worker's queue of payouts to send, oldest first.
            models.Index(fields=["created_at"], name="withdrawal_to_submit", condition=Q(status="pending")),
            # Recovery's look at payouts sent but not settled.
            models.Index(
                fields=["updated_at"], name="withdrawal_in_flight", condition=Q(status__in=["submitting", "submitted"])
            ),
            models.Index(fields=["wallet", "-created_at"], name="withdrawal_by_wallet"),
            # History's keyset over the withdrawals that have no posted entry.
            models.Index(
                fields=["wallet", "-history_after_entry_id", "-created_at", "-id"],
                name="withdrawal_history",
                condition=~Q(status="succeeded"),
            ),
            models.Index(fields=["-created_at"], name="withdrawal_recent"),
            models.Index(fields=["-created_at"], name="withdrawal_flagged", condition=Q(flagged_for_review=True)),
        ]
        permissions = [("recheck_withdrawal", "Can re-check withdrawals with the bank")]

    def __str__(self) -> str:
        return f"withdrawal {self.id} ({self.status})"

    @property
    def public_status(self) -> str:
        """What the API shows: the bank's business is not the customer's."""
        return self.status if self.status in (self.Status.SUCCEEDED, self.Status.FAILED) else "pending"


class BankEvent(models.Model):
    """Every bank callback event id seen. Inserted first: a redelivery hits the primary key
    and changes nothing."""

    id = models.CharField(max_length=255, primary_key=True)
    type = models.CharField(max_length=64)
    withdrawal = models.ForeignKey(
        Withdrawal, on_delete=models.PROTECT, null=True, blank=True, related_name="bank_events"
    )
    outcome = models.CharField(max_length=32, blank=True, default="")
    payload = models.JSONField()
    received_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class SandboxPayout(models.Model):
    """The sandbox bank's own state (it plays an outside system: nothing else reads this).
    One row per payout reference, however many times the payout was submitted."""

    class Status(models.TextChoices):
        PROCESSING = "processing"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    reference = models.CharField(max_length=255, primary_key=True)
    amount = models.BigIntegerField()
    currency = models.CharField(max_length=3)
    account_last4 = models.CharField(max_length=4)
    ifsc = models.CharField(max_length=11)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PROCESSING)
    submissions = models.IntegerField(default=1)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    def __str__(self) -> str:
        return f"sandbox payout {self.reference} ({self.status})"
