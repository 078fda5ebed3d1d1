"""Notifications in the Django admin: merchants' webhook endpoints (never their secrets),
webhook deliveries (filter failing / dead-lettered; retry action) and sent emails.

All read-only. The one change staff make is retrying deliveries, through an admin action
that calls wallets.notifications.webhook_delivery_retry (audited), the same service a
management shell would use; it needs the `retry_webhookdelivery` permission (operations).
"""

from __future__ import annotations

import uuid

from django.contrib import admin, messages
from django.db.models import Q
from django.urls import reverse
from django.utils.html import format_html

from ledger.admin import ReadOnlyAdmin, admin_link, parse_id, parse_uuid
from wallets.models import EmailNotification, WebhookDelivery, WebhookEndpoint
from wallets.notifications import webhook_delivery_retry


class LiveFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("live", "live"), ("deleted", "deleted")]

    def queryset(self, request, queryset):
        if self.value() == "live":
            return queryset.filter(deleted_at__isnull=True)
        if self.value() == "deleted":
            return queryset.filter(deleted_at__isnull=False)
        return queryset


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ReadOnlyAdmin):
    list_display = ("id", "url", "wallet", "created_at", "deleted_at")
    list_select_related = ("wallet",)
    list_filter = (LiveFilter,)
    ordering = ("-created_at",)
    search_fields = ("wallet__handle",)
    search_help_text = "A merchant's wallet handle (name@wallet), or an endpoint id"
    # The secret is left out of every page on purpose: staff never need it, and a page
    # that showed it would let anyone with view access forge the merchant's events.
    fields = ("id", "url", "wallet_link", "created_at", "deleted_at", "deliveries_link")
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        endpoint_id = parse_uuid(term)
        if endpoint_id is not None:
            return queryset.filter(id=endpoint_id), False
        return queryset.filter(wallet__handle=term.lower()), False

    @admin.display(description="wallet")
    def wallet_link(self, obj: WebhookEndpoint) -> str:
        return admin_link(obj.wallet)

    @admin.display(description="deliveries")
    def deliveries_link(self, obj: WebhookEndpoint) -> str:
        url = reverse("admin:wallets_webhookdelivery_changelist")
        return format_html('<a href="{}?q={}">deliveries to this endpoint</a>', url, obj.id)


class DeliveryStatusFilter(admin.SimpleListFilter):
    """Failing = still pending after at least one failed attempt; dead = dead-lettered."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [
            ("failing", "failing (retrying)"),
            ("dead", "dead-lettered"),
            ("pending", "pending"),
            ("delivered", "delivered"),
            ("cancelled", "cancelled"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value == "failing":
            return queryset.filter(status=WebhookDelivery.Status.PENDING, attempts__gt=0)
        if value in WebhookDelivery.Status.values:
            return queryset.filter(status=value)
        return queryset


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "public_event_id",
        "event_type",
        "endpoint_url",
        "status",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "short_error",
        "delivered_at",
    )
    list_select_related = ("endpoint",)
    list_filter = (DeliveryStatusFilter,)
    ordering = ("-id",)
    sortable_by = ("id",)
    search_fields = ("endpoint__id",)
    search_help_text = "An event id as the merchant sees it (evt_...), a delivery or outbox event id, an endpoint id"
    actions = ("retry",)
    fields = (
        "id",
        "public_event_id",
        "event_type",
        "endpoint_link",
        "event_link",
        "status",
        "attempts",
        "next_attempt_at",
        "leased_until",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
    )
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        # Exact, indexed lookups only.
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.startswith("evt_"):
            try:
                return queryset.filter(public_id=uuid.UUID(hex=term[4:])), False
            except ValueError:
                return queryset.none(), False
        endpoint_id = parse_uuid(term)
        if endpoint_id is not None:
            return queryset.filter(endpoint_id=endpoint_id), False
        number = parse_id(term)
        if number is not None:
            return queryset.filter(Q(id=number) | Q(event_id=number)), False
        return queryset.none(), False

    def has_retry_permission(self, request) -> bool:
        return request.user.has_perm("wallets.retry_webhookdelivery")

    @admin.display(description="event id")
    def public_event_id(self, obj: WebhookDelivery) -> str:
        return obj.public_event_id

    @admin.display(description="endpoint")
    def endpoint_url(self, obj: WebhookDelivery) -> str:
        return obj.endpoint.url

    @admin.display(description="endpoint")
    def endpoint_link(self, obj: WebhookDelivery) -> str:
        return admin_link(obj.endpoint)

    @admin.display(description="outbox event")
    def event_link(self, obj: WebhookDelivery) -> str:
        return admin_link(obj.event)

    @admin.display(description="last error")
    def short_error(self, obj: WebhookDelivery) -> str:
        return obj.last_error[:80]

    @admin.action(permissions=["retry"], description="Retry selected deliveries now (dead-lettered or failing)")
    def retry(self, request, queryset):
        retried = skipped = 0
        for delivery_id in queryset.order_by("id").values_list("id", flat=True)[:500]:
            if webhook_delivery_retry(delivery_id=delivery_id, actor=request.user, reason="retried from the admin"):
                retried += 1
            else:
                skipped += 1
        self.message_user(request, f"{retried} delivery(ies) offered again now", messages.SUCCESS)
        if skipped:
            self.message_user(request, f"{skipped} were delivered or cancelled already: left alone", messages.WARNING)


@admin.register(EmailNotification)
class EmailNotificationAdmin(ReadOnlyAdmin):
    list_display = ("id", "event_type", "email", "subject", "sent_at")
    ordering = ("-id",)
    sortable_by = ("id",)
    search_fields = ("email",)
    search_help_text = "An outbox event id"
    fields = ("id", "event_link", "event_type", "user_link", "email", "subject", "sent_at")
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        number = parse_id(term)
        return (queryset.filter(event_id=number) if number is not None else queryset.none()), False

    @admin.display(description="outbox event")
    def event_link(self, obj: EmailNotification) -> str:
        return admin_link(obj.event)

    @admin.display(description="user")
    def user_link(self, obj: EmailNotification) -> str:
        return admin_link(obj.user)
