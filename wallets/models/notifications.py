"""Notifications of money movements: merchants' webhook endpoints, one delivery row per
(outbox event, endpoint), and the record of the emails sent to users.

A WebhookDelivery is the unit of at-least-once delivery to a merchant: the outbox handler
only inserts it (fast, in the worker's delivery of the event), and a separate worker job
claims due rows with a lease and POSTs them. Its `public_id` is the event id the merchant
sees; it is the same on every attempt, so the receiver deduplicates by it.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from ledger.models import OutboxEvent
from wallets.models.core import Wallet


class WebhookEndpoint(models.Model):
    """A URL a merchant registered to receive signed events for their wallet."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    wallet = models.ForeignKey(Wallet, on_delete=models.PROTECT, related_name="webhook_endpoints")
    url = models.URLField(max_length=2000)
    # The HMAC key the deliveries are signed with. It has to be readable (a hash could not
    # sign), so it is shown to the merchant once, at creation, and never by the API or the
    # admin afterwards.
    secret = models.CharField(max_length=128)
    created_at = models.DateTimeField(db_default=Now())
    # Set when the merchant deletes the endpoint: the row stays, because its deliveries
    # refer to it, but it gets no new events and its pending deliveries are cancelled.
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["wallet"], condition=Q(deleted_at__isnull=True), name="webhook_endpoint_live"),
        ]

    def __str__(self) -> str:
        return self.url


class WebhookDelivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        # N attempts failed: no more automatic retries; staff may retry from the admin.
        DEAD = "dead"
        # The endpoint was deleted before the event reached it.
        CANCELLED = "cancelled"

    id = models.BigAutoField(primary_key=True)
    # The event id the receiver sees (`evt_<hex>`): stable across retries of this delivery.
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.PROTECT, related_name="deliveries")
    event = models.ForeignKey(OutboxEvent, on_delete=models.PROTECT, related_name="+")
    # The event's type, copied so the admin filters and lists without a join.
    event_type = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    attempts = models.IntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_default=Now())
    # A claim holds the row until then; a worker that dies mid-delivery loses its claim when
    # this passes, and another worker delivers the row again.
    leased_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.IntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "webhook deliveries"
        constraints = [
            # One delivery per (event, endpoint): an outbox event handled twice enqueues once.
            models.UniqueConstraint(fields=["event", "endpoint"], name="webhook_delivery_once"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "delivered", "dead", "cancelled"]),
                name="webhook_delivery_status_valid",
            ),
            models.CheckConstraint(condition=Q(attempts__gte=0), name="webhook_delivery_attempts_not_negative"),
        ]
        indexes = [
            # The claim: pending rows that are due, oldest due first.
            models.Index(fields=["next_attempt_at"], condition=Q(status="pending"), name="webhook_delivery_due"),
            models.Index(fields=["endpoint", "-id"], name="webhook_delivery_by_endpoint"),
            models.Index(fields=["status", "-id"], name="webhook_delivery_by_status"),
        ]
        permissions = [("retry_webhookdelivery", "Can retry webhook deliveries")]

    def __str__(self) -> str:
        return f"evt_{self.public_id.hex} ({self.event_type} -> {self.status})"

    @property
    def public_event_id(self) -> str:
        return f"evt_{self.public_id.hex}"


class EmailNotification(models.Model):
    """One email to one user about one outbox event. Inserted before the email is sent, in
    the same transaction, so the unique constraint lets one send through per (event, user)
    however often the outbox handler runs."""

    id = models.BigAutoField(primary_key=True)
    event = models.ForeignKey(OutboxEvent, on_delete=models.PROTECT, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    # Copied at sending time: what was sent, where, about which kind of event.
    event_type = models.CharField(max_length=64)
    email = models.EmailField(max_length=254)
    subject = models.CharField(max_length=200)
    sent_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.UniqueConstraint(fields=["event", "user"], name="email_notification_once")]
        indexes = [models.Index(fields=["user", "-id"], name="email_notification_by_user")]

    def __str__(self) -> str:
        return f"{self.event_type} to {self.email}"
