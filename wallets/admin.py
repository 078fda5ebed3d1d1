"""Wallets, payment attempts, idempotency keys and gateway events in the Django admin.

Everything is read-only. The one change staff make here is freezing or unfreezing wallets,
through admin actions that ask for a reason and call wallets.services (which takes the
account lock and writes the audit record); the admin never sets a status itself.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db.models.functions import Lower
from django.template.response import TemplateResponse

from ledger.admin import ReadOnlyAdmin, admin_link, parse_uuid
from wallets.models import GatewayEvent, IdempotencyKey, PaymentAttempt, Wallet
from wallets.services import wallet_freeze, wallet_unfreeze


def wallet_search(queryset, term: str, *, prefix: str = ""):
    """Exact, indexed matches only: a wallet handle (unique), a user email (the unique
    Lower(email) index; compared as lower(email), which that index serves) or a wallet id.
    A substring search would scan every row of a table with millions of them."""
    term = term.strip()
    if not term:
        return queryset
    if term.lower().endswith("@wallet"):
        return queryset.filter(**{f"{prefix}handle": term.lower()})
    if "@" in term:
        email_field = "user__email" if prefix == "" else "email"
        return queryset.alias(_email_lower=Lower(email_field)).filter(_email_lower=term.lower())
    wallet_id = parse_uuid(term)
    return queryset.filter(**{f"{prefix}id": wallet_id}) if wallet_id else queryset.none()


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=1000,
        help_text="Required. Kept in the audit log with your name.",
    )

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return reason


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    list_display = ("handle", "user_email", "balance", "held", "available", "status", "currency", "created_at")
    list_select_related = ("user", "account")
    # The handle is unique (indexed): the list reads in handle order from the index.
    ordering = ("handle",)
    sortable_by = ("handle",)
    search_fields = ("handle", "user__email")
    search_help_text = "A wallet handle (name@wallet) or user email, exactly; or a wallet id"
    actions = ("freeze", "unfreeze")
    fields = (
        "id",
        "handle",
        "user_link",
        "account_link",
        "currency",
        "balance",
        "held",
        "available",
        "status",
        "status_reason",
        "created_at",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user", "account")

    def get_search_results(self, request, queryset, search_term):
        return wallet_search(queryset, search_term), False

    def has_freeze_permission(self, request) -> bool:
        return request.user.has_perm("wallets.freeze_wallet")

    @admin.display(description="user email")
    def user_email(self, obj: Wallet) -> str:
        return obj.user.email

    @admin.display(description="balance")
    def balance(self, obj: Wallet) -> int:
        return obj.account.balance

    @admin.display(description="held")
    def held(self, obj: Wallet) -> int:
        return obj.account.held_balance

    @admin.display(description="available")
    def available(self, obj: Wallet) -> int:
        return obj.account.available_balance

    @admin.display(description="user")
    def user_link(self, obj: Wallet) -> str:
        return admin_link(obj.user)

    @admin.display(description="ledger account")
    def account_link(self, obj: Wallet) -> str:
        return admin_link(obj.account)

    @admin.action(permissions=["freeze"], description="Freeze selected wallets (asks for a reason)")
    def freeze(self, request, queryset):
        return self._set_status(request, queryset, action="freeze")

    @admin.action(permissions=["freeze"], description="Unfreeze selected wallets (asks for a reason)")
    def unfreeze(self, request, queryset):
        return self._set_status(request, queryset, action="unfreeze")

    def _set_status(self, request, queryset, *, action: str):
        """First POST (from the changelist): show the reason form. Second POST (the form,
        with `apply`): call the service once per wallet, each in its own transaction."""
        form = ReasonForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            service = wallet_freeze if action == "freeze" else wallet_unfreeze
            reason = form.cleaned_data["reason"]
            wallets = list(queryset.order_by("handle"))
            for wallet in wallets:
                service(wallet_id=wallet.id, actor=request.user, reason=reason)
            done = "Frozen" if action == "freeze" else "Unfrozen"
            self.message_user(
                request,
                f"{done} {len(wallets)} wallet(s): {', '.join(w.handle for w in wallets[:20])}",
                messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{action.capitalize()} wallets",
            "verb": action,
            "form": form,
            "wallets": queryset.select_related("user", "account").order_by("handle")[:200],
            "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "action": action,
        }
        return TemplateResponse(request, "admin/wallets/wallet/status_confirmation.html", context)


class FlaggedFilter(admin.SimpleListFilter):
    """Attempts flagged for review: the payment_flagged partial index holds exactly these."""

    title = "flagged for review"
    parameter_name = "flagged"

    def lookups(self, request, model_admin):
        return [("yes", "flagged for review")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(flagged_for_review=True)
        return queryset


@admin.register(PaymentAttempt)
class PaymentAttemptAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "wallet",
        "amount",
        "currency",
        "status",
        "flagged_for_review",
        "gateway_reference",
        "created_at",
    )
    list_select_related = ("wallet",)
    list_filter = (FlaggedFilter, "status")
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    search_fields = ("id", "wallet__handle")
    search_help_text = "A payment id, or a wallet handle (its attempts)"
    fields = (
        "id",
        "wallet",
        "amount",
        "currency",
        "status",
        "gateway_reference",
        "transaction",
        "flagged_for_review",
        "review_reason",
        "created_at",
        "expires_at",
        "updated_at",
    )

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if "@" in term:
            # payment_by_wallet indexes (wallet, -created_at).
            return queryset.filter(wallet__handle=term.lower()), False
        payment_id = parse_uuid(term)
        return (queryset.filter(id=payment_id) if payment_id else queryset.none()), False


@admin.register(IdempotencyKey)
class IdempotencyKeyAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "key", "response_status", "created_at")
    list_select_related = ("user",)
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    search_fields = ("user__email",)
    search_help_text = "A user email, exactly (their keys)"
    fields = ("id", "user", "key", "request_hash", "response_status", "response_body", "created_at")

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        # (user, key) is unique, so the user's keys come from that index.
        return queryset.alias(_email_lower=Lower("user__email")).filter(_email_lower=term.lower()), False


@admin.register(GatewayEvent)
class GatewayEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "type", "payment_attempt_id", "received_at")
    sortable_by = ("id",)
    search_fields = ("id", "payment_attempt__id")
    search_help_text = "A gateway event id, or a payment id (its events)"
    fields = ("id", "type", "payment_attempt", "payload", "received_at")

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        payment_id = parse_uuid(term)
        if payment_id:
            return queryset.filter(payment_attempt_id=payment_id), False
        return queryset.filter(id=term), False


from wallets import (  # noqa: E402
    admin_adjustments,  # noqa: F401
    admin_merchants,  # noqa: F401
    admin_notifications,  # noqa: F401
    admin_withdrawals,  # noqa: F401
)
