"""The double-entry ledger: accounts, transactions and their entries.

Rules that PostgreSQL enforces (migrations 0002): entries are never updated or deleted, the
entries of each ledger transaction sum to zero (at least two legs, written by one statement),
customer balances and held amounts never go negative. `ledger.posting` is the only code that
writes entries or balances; everything else reads.

This app knows accounts and money, not users, wallets or HTTP.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now


class Account(models.Model):
    class Kind(models.TextChoices):
        CUSTOMER = "customer", "customer"
        SYSTEM = "system", "system"

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # System accounts are found by code (`gateway_clearing`, ...); customer accounts by
    # the wallet that owns them.
    code = models.CharField(max_length=64, unique=True, null=True, blank=True)
    currency = models.CharField(max_length=3)
    # Posted money: the sum of this account's entries, kept in step by ledger.posting.
    balance = models.BigIntegerField(default=0)
    # Money reserved by pending holds; available = balance - held_balance.
    held_balance = models.BigIntegerField(default=0)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=["customer", "system"]), name="account_kind_valid"),
            models.CheckConstraint(condition=Q(currency__regex=r"^[A-Z]{3}$"), name="account_currency_iso"),
            models.CheckConstraint(
                condition=~Q(kind="customer") | Q(balance__gte=0),
                name="customer_balance_not_negative",
            ),
            models.CheckConstraint(condition=Q(held_balance__gte=0), name="held_not_negative"),
            models.CheckConstraint(
                condition=~Q(kind="customer") | Q(balance__gte=models.F("held_balance")),
                name="customer_available_not_negative",
            ),
            models.CheckConstraint(
                condition=~Q(kind="system") | Q(code__isnull=False),
                name="system_account_has_code",
            ),
        ]

    def __str__(self) -> str:
        return self.code or f"account {self.id}"

    @property
    def available_balance(self) -> int:
        return self.balance - self.held_balance


class TransactionType(models.TextChoices):
    DEPOSIT = "deposit"
    TRANSFER = "transfer"
    PAYMENT = "payment"
    REFUND = "refund"
    CASHBACK = "cashback"
    WITHDRAWAL = "withdrawal"
    WITHDRAWAL_REVERSAL = "withdrawal_reversal"
    ADJUSTMENT = "adjustment"


class Transaction(models.Model):
    Type = TransactionType

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=32, choices=TransactionType.choices)
    note = models.CharField(max_length=280, blank=True, default="")
    # Where this movement came from (`payment_attempt:<id>`, ...), for audit.
    reference = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        indexes = [models.Index(fields=["created_at"], name="ledger_txn_created")]
        constraints = [
            models.CheckConstraint(condition=Q(type__in=TransactionType.values), name="txn_type_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class Entry(models.Model):
    id = models.BigAutoField(primary_key=True)
    transaction = models.ForeignKey(Transaction, on_delete=models.PROTECT, related_name="entries")
    # Indexed by entry_account_history (account_id, id DESC), which also serves every lookup
    # by account alone; a second index on account_id would only slow each insert.
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="entries", db_index=False)
    # Credit positive, debit negative, never zero.
    amount = models.BigIntegerField()
    # The account's posted balance right after this entry.
    balance_after = models.BigIntegerField()
    # Copied from the transaction so that history filters by type need no join.
    type = models.CharField(max_length=32, choices=Transaction.Type.choices)
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        verbose_name_plural = "entries"
        indexes = [
            # Serves history (newest first, keyset by id) for one account, and the
            # reconciliation's per-account aggregate.
            models.Index(fields=["account", "-id"], name="entry_account_history"),
        ]
        constraints = [
            models.CheckConstraint(condition=~Q(amount=0), name="entry_amount_not_zero"),
        ]

    def __str__(self) -> str:
        return f"entry {self.id}: {self.amount:+d} on {self.account_id}"


class OutboxEvent(models.Model):
    """An event written in the same database transaction as the change it announces, and
    delivered at least once by the worker (`run_worker`)."""

    id = models.BigAutoField(primary_key=True)
    type = models.CharField(max_length=64)
    payload = models.JSONField()
    created_at = models.DateTimeField(db_default=Now())
    # Not handed out before this time (retries back off by moving it).
    available_at = models.DateTimeField(db_default=Now())
    # A worker that claimed the event holds it until then; after a crash it expires and
    # another worker picks the event up again.
    leased_until = models.DateTimeField(null=True, blank=True)
    attempts = models.IntegerField(default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        indexes = [
            models.Index(
                fields=["available_at", "id"],
                name="outbox_pending",
                condition=Q(delivered_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.type} #{self.id}"


class AuditLog(models.Model):
    """Who did what to money or to a wallet, and why. Append-only, like entries."""

    id = models.BigAutoField(primary_key=True)
    created_at = models.DateTimeField(db_default=Now())
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    # Who acted, in words: an email, or `system:<job>` for the worker and commands run
    # without a user.
    actor_label = models.CharField(max_length=255)
    action = models.CharField(max_length=64)
    target = models.CharField(max_length=255)
    reason = models.TextField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        indexes = [models.Index(fields=["target", "-id"], name="audit_by_target")]

    def __str__(self) -> str:
        return f"{self.action} {self.target} by {self.actor_label}"


class ReconciliationRun(models.Model):
    id = models.BigAutoField(primary_key=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField()
    ok = models.BooleanField()
    checked_accounts = models.BigIntegerField()
    checked_transactions = models.BigIntegerField()
    total_balance = models.BigIntegerField()
    mismatches = models.JSONField(default=list)
    triggered_by = models.CharField(max_length=255)

    class Meta:
        indexes = [models.Index(fields=["-started_at"], name="recon_recent")]
        permissions = [("run_reconciliation", "Can run a reconciliation from the admin or the API")]

    def __str__(self) -> str:
        return f"reconciliation {self.started_at:%Y-%m-%d %H:%M} {'ok' if self.ok else 'MISMATCH'}"


class Hold(models.Model):
    """Money reserved on an account: `held_balance` rises by `amount`, `balance` does not.
    Later it is posted (becomes a ledger transaction) or released, exactly once; both happen
    only in ledger.holds, under the account's lock."""

    class Status(models.TextChoices):
        PENDING = "pending"
        POSTED = "posted"
        RELEASED = "released"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="holds")
    amount = models.BigIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    # What the hold is for (`withdrawal:<id>`); unique so one purpose reserves money once.
    reference = models.CharField(max_length=255, unique=True)
    # The transaction that posted the hold, once posted.
    transaction = models.OneToOneField(
        Transaction, on_delete=models.PROTECT, null=True, blank=True, related_name="hold"
    )
    created_at = models.DateTimeField(db_default=Now())
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # Reconciliation sums the pending holds per account.
            models.Index(fields=["account"], name="hold_pending_by_account", condition=Q(status="pending")),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="hold_amount_positive"),
            models.CheckConstraint(condition=Q(status__in=["pending", "posted", "released"]), name="hold_status_valid"),
            models.CheckConstraint(
                condition=(Q(status="posted") & Q(transaction__isnull=False))
                | (~Q(status="posted") & Q(transaction__isnull=True)),
                name="hold_posted_iff_transaction",
            ),
            models.CheckConstraint(
                condition=Q(status="pending", resolved_at__isnull=True)
                | (~Q(status="pending") & Q(resolved_at__isnull=False)),
                name="hold_resolved_iff_not_pending",
            ),
        ]

    def __str__(self) -> str:
        return f"hold {self.amount} on {self.account_id} ({self.status})"
