"""Merchant payments in the Django admin: payments, refunds and cashback grants (read-only),
cashback campaigns (created, paused and resumed through wallets.cashback, with the budget
spent shown), and merchant fees (set through wallets.payments.merchant_fee_set).

Who may do what is Django permissions: the view permissions to see each table (operations
and support), `manage_cashbackcampaign` to create, pause and resume campaigns and
`set_merchant_fee` to set a fee (operations; wallets/migrations/0008_merchants_staff_groups).
The admin writes nothing itself: every change goes through the same service as the API.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from ledger.admin import ReadOnlyAdmin, admin_link, parse_uuid
from wallets.cashback import campaign_create, campaign_pause, campaign_resume
from wallets.models import CashbackCampaign, CashbackGrant, MerchantProfile, Payment, Refund, Wallet
from wallets.payments import merchant_fee_set
from walletsite.errors import ApiError


def _by_wallet_or_id(queryset, term: str, *, id_fields: tuple[str, ...], wallet_fields: tuple[str, ...]):
    """Exact, indexed matches only: a wallet handle, or an id (of the row or its transaction)."""
    term = term.strip()
    if not term:
        return queryset
    if term.lower().endswith("@wallet"):
        wallet = Wallet.objects.filter(handle=term.lower()).first()
        if wallet is None:
            return queryset.none()
        match = queryset.none()
        for field in wallet_fields:
            match = match | queryset.filter(**{field: wallet})
        return match
    value = parse_uuid(term)
    if value is None:
        return queryset.none()
    match = queryset.none()
    for field in id_fields:
        match = match | queryset.filter(**{field: value})
    return match


@admin.register(Payment)
class PaymentAdmin(ReadOnlyAdmin):
    list_display = (
        "transaction_id",
        "customer_wallet",
        "merchant_wallet",
        "amount",
        "fee",
        "refunded",
        "currency",
        "order_id",
        "created_at",
    )
    list_select_related = ("customer_wallet", "merchant_wallet")
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    search_fields = ("transaction_id",)
    search_help_text = "A payment's transaction id or payment id, or a customer's or merchant's wallet handle"
    fields = (
        "id",
        "transaction_link",
        "customer_wallet",
        "merchant_wallet",
        "amount",
        "currency",
        "fee_bps",
        "fee",
        "refunded",
        "fee_refunded",
        "refundable",
        "order_id",
        "cashback_link",
        "refund_links",
        "created_at",
    )
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        return _by_wallet_or_id(
            queryset,
            search_term,
            id_fields=("transaction_id", "id"),
            wallet_fields=("customer_wallet", "merchant_wallet"),
        ), False

    @admin.display(description="ledger transaction")
    def transaction_link(self, obj: Payment) -> str:
        return admin_link(obj.transaction)

    @admin.display(description="cashback")
    def cashback_link(self, obj: Payment) -> str:
        grant = CashbackGrant.objects.filter(payment=obj).first()
        return admin_link(grant, f"{grant.amount} ({grant.reversed} reversed)") if grant else "-"

    @admin.display(description="refunds")
    def refund_links(self, obj: Payment) -> str:
        from django.utils.html import format_html_join

        refunds = obj.refunds.order_by("created_at")[:50]
        if not refunds:
            return "-"
        return format_html_join(", ", "{}", ((admin_link(r, f"{r.amount}"),) for r in refunds))


@admin.register(Refund)
class RefundAdmin(ReadOnlyAdmin):
    list_display = ("id", "payment", "amount", "fee_refunded", "cashback_reversed", "reason", "created_at")
    list_select_related = ("payment",)
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    search_fields = ("id",)
    search_help_text = "A refund id, or its payment's transaction id"
    fields = (
        "id",
        "payment_link",
        "transaction_link",
        "amount",
        "fee_refunded",
        "cashback_reversed",
        "cashback_transaction",
        "reason",
        "created_at",
    )
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        return _by_wallet_or_id(
            queryset, search_term, id_fields=("id", "payment__transaction_id", "transaction_id"), wallet_fields=()
        ), False

    @admin.display(description="payment")
    def payment_link(self, obj: Refund) -> str:
        return admin_link(obj.payment)

    @admin.display(description="ledger transaction")
    def transaction_link(self, obj: Refund) -> str:
        return admin_link(obj.transaction)


@admin.register(CashbackGrant)
class CashbackGrantAdmin(ReadOnlyAdmin):
    list_display = ("id", "campaign", "payment", "amount", "reversed", "created_at")
    list_select_related = ("campaign", "payment")
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    search_fields = ("id",)
    search_help_text = "A grant id, or its payment's transaction id"
    fields = ("id", "campaign", "payment", "transaction", "amount", "reversed", "created_at")
    readonly_fields = fields

    def get_search_results(self, request, queryset, search_term):
        return _by_wallet_or_id(
            queryset, search_term, id_fields=("id", "payment__transaction_id"), wallet_fields=()
        ), False


class CampaignForm(forms.ModelForm):
    class Meta:
        model = CashbackCampaign
        fields = ("name", "bps", "cap_per_payment", "budget", "starts_at", "ends_at", "merchant_wallet")

    def clean_merchant_wallet(self):
        wallet = self.cleaned_data.get("merchant_wallet")
        if wallet is not None and wallet.user.role != "merchant":
            raise forms.ValidationError("Not a merchant's wallet.")
        return wallet

    def clean(self):
        data = super().clean()
        starts_at, ends_at = data.get("starts_at"), data.get("ends_at")
        if starts_at and ends_at and ends_at <= starts_at:
            self.add_error("ends_at", "Must be after the start.")
        return data


@admin.register(CashbackCampaign)
class CashbackCampaignAdmin(ReadOnlyAdmin):
    list_display = ("name", "bps", "cap_per_payment", "budget", "spent", "remaining", "state", "starts_at", "ends_at")
    list_select_related = ("merchant_wallet",)
    list_filter = ("status",)
    ordering = ("-created_at", "-id")
    sortable_by = ("created_at",)
    actions = ("pause", "resume")
    form = CampaignForm
    raw_id_fields = ("merchant_wallet",)
    readonly_fields = (
        "id",
        "name",
        "bps",
        "cap_per_payment",
        "budget",
        "spent",
        "remaining",
        "starts_at",
        "ends_at",
        "merchant_wallet",
        "status",
        "created_by",
        "created_at",
    )

    def has_manage_permission(self, request) -> bool:
        return request.user.has_perm("wallets.manage_cashbackcampaign")

    def has_add_permission(self, request, obj=None) -> bool:
        return self.has_manage_permission(request)

    def get_fields(self, request, obj=None):
        return CampaignForm.Meta.fields if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        """Create through the service (validation, audit); the admin then shows its row."""
        data = form.cleaned_data
        wallet = data.get("merchant_wallet")
        created = campaign_create(
            actor=request.user,
            name=data["name"],
            bps=data["bps"],
            cap_per_payment=data["cap_per_payment"],
            budget=data["budget"],
            starts_at=data["starts_at"],
            ends_at=data["ends_at"],
            merchant=str(wallet.id) if wallet else None,
        )
        obj.pk = created.pk

    @admin.display(description="remaining")
    def remaining(self, obj: CashbackCampaign) -> int:
        return obj.remaining

    @admin.display(description="status")
    def state(self, obj: CashbackCampaign) -> str:
        now = timezone.now()
        if obj.status == CashbackCampaign.Status.PAUSED:
            return "paused"
        if obj.spent >= obj.budget:
            return "budget spent"
        if now < obj.starts_at:
            return "scheduled"
        if now >= obj.ends_at:
            return "ended"
        return "running"

    @admin.action(permissions=["manage"], description="Pause selected campaigns")
    def pause(self, request, queryset):
        self._set_status(request, queryset, service=campaign_pause, done="Paused")

    @admin.action(permissions=["manage"], description="Resume selected campaigns")
    def resume(self, request, queryset):
        self._set_status(request, queryset, service=campaign_resume, done="Resumed")

    def _set_status(self, request, queryset, *, service, done: str) -> None:
        campaigns = list(queryset.order_by("created_at")[:200])
        for campaign in campaigns:
            service(campaign_id=campaign.id, actor=request.user)
        self.message_user(
            request,
            f"{done} {len(campaigns)} campaign(s): {', '.join(c.name for c in campaigns[:20])}",
            messages.SUCCESS,
        )


class MerchantFeeForm(forms.ModelForm):
    class Meta:
        model = MerchantProfile
        fields = ("wallet", "fee_bps")

    def clean_wallet(self):
        wallet = self.cleaned_data["wallet"]
        if wallet.user.role != "merchant":
            raise forms.ValidationError("Not a merchant's wallet.")
        return wallet

    def clean_fee_bps(self):
        value = self.cleaned_data.get("fee_bps")
        if value is not None and not 0 <= value <= 10_000:
            raise forms.ValidationError("A fee is 0-10000 basis points.")
        return value


@admin.register(MerchantProfile)
class MerchantProfileAdmin(ReadOnlyAdmin):
    list_display = ("wallet", "fee_bps", "updated_at")
    list_select_related = ("wallet",)
    ordering = ("wallet__handle",)
    form = MerchantFeeForm
    raw_id_fields = ("wallet",)

    def has_add_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("wallets.set_merchant_fee")

    def has_change_permission(self, request, obj=None) -> bool:
        return request.user.has_perm("wallets.set_merchant_fee")

    def get_readonly_fields(self, request, obj=None):
        # The merchant of a profile never changes; only its fee does.
        return ("wallet", "updated_at") if obj is not None else ()

    def save_model(self, request, obj, form, change):
        wallet = obj.wallet
        try:
            merchant_fee_set(merchant=wallet, fee_bps=form.cleaned_data.get("fee_bps"), actor=request.user)
        except (ValueError, ApiError) as error:
            self.message_user(request, str(error), messages.ERROR)
