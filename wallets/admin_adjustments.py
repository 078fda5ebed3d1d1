"""Adjustments in the Django admin: the approval queue, and the maker's form.

The table is read-only like every money table. Makers (`wallets.make_adjustment`) record an
adjustment with the "Add" form, which calls wallets.adjustments.adjustment_create; checkers
(`wallets.approve_adjustment`) approve or reject from the list, with actions that show what
they are about to decide, then call adjustment_approve / adjustment_reject once per
adjustment, each in its own transaction. The services refuse what the API refuses: the maker
approving their own adjustment gets an error message and the adjustment stays pending.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from ledger.admin import ReadOnlyAdmin, admin_link, parse_uuid
from wallets.adjustments import (
    MAKE_PERMISSION,
    SYSTEM_PARTIES,
    adjustment_approve,
    adjustment_create,
    adjustment_reject,
    party_label,
    party_resolve,
)
from wallets.admin import ReasonForm
from wallets.models import Adjustment
from walletsite.errors import ApiError

PARTY_HELP = f"A wallet handle (name@wallet), a wallet id, or {' or '.join(SYSTEM_PARTIES)}."


class AdjustmentMakeForm(forms.Form):
    source = forms.CharField(label="From", max_length=64, help_text=PARTY_HELP)
    target = forms.CharField(label="To", max_length=64, help_text=PARTY_HELP)
    amount = forms.IntegerField(min_value=1, max_value=2**53 - 1, help_text="Minor units (paise for INR).")
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=1000,
        help_text="Required. Kept in the audit log with your name; the checker reads it.",
    )

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return reason

    def _party(self, name: str, field: str) -> str:
        ref = self.cleaned_data[name].strip()
        try:
            party_resolve(ref=ref, field=field)
        except ApiError as error:
            raise forms.ValidationError(error.detail) from None
        return ref

    def clean_source(self) -> str:
        return self._party("source", "from")

    def clean_target(self) -> str:
        return self._party("target", "to")


class PendingApprovalFilter(admin.SimpleListFilter):
    """The approval queue: exactly the rows of the adjustment_pending partial index."""

    title = "approval queue"
    parameter_name = "queue"

    def lookups(self, request, model_admin):
        return [("pending", "pending approval")]

    def queryset(self, request, queryset):
        if self.value() == "pending":
            return queryset.filter(status=Adjustment.Status.PENDING_APPROVAL).order_by("created_at")
        return queryset


@admin.register(Adjustment)
class AdjustmentAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "status",
        "source",
        "target",
        "amount",
        "currency",
        "created_by",
        "created_at",
        "decided_by",
        "decided_at",
    )
    list_select_related = ("from_account__wallet", "to_account__wallet", "created_by", "decided_by")
    list_filter = (PendingApprovalFilter, "status")
    ordering = ("-created_at", "-id")
    sortable_by = ("created_at",)
    search_fields = ("id",)
    search_help_text = "An adjustment id"
    actions = ("approve", "reject")
    fields = (
        "id",
        "status",
        "source",
        "target",
        "amount",
        "currency",
        "reason",
        "created_by",
        "created_at",
        "decided_by",
        "decided_at",
        "decision_reason",
        "transaction_link",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        return super().get_queryset(request).select_related(*self.list_select_related)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        adjustment_id = parse_uuid(term)
        return (queryset.filter(id=adjustment_id) if adjustment_id else queryset.none()), False

    @admin.display(description="from")
    def source(self, obj: Adjustment) -> str:
        return party_label(obj.from_account)

    @admin.display(description="to")
    def target(self, obj: Adjustment) -> str:
        return party_label(obj.to_account)

    @admin.display(description="transaction")
    def transaction_link(self, obj: Adjustment) -> str:
        return admin_link(obj.transaction)

    # --- making (the "Add" button, for makers) ---------------------------------------------

    def has_add_permission(self, request, obj=None) -> bool:
        return request.user.has_perm(MAKE_PERMISSION)

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = AdjustmentMakeForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                adjustment = adjustment_create(
                    maker=request.user,
                    from_ref=data["source"],
                    to_ref=data["target"],
                    amount=data["amount"],
                    reason=data["reason"],
                )
            except ApiError as error:
                form.add_error(None, error.detail)
            else:
                self.message_user(
                    request,
                    f"Adjustment {adjustment.id} recorded, pending approval by another staff member. "
                    "Nothing has moved yet.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:wallets_adjustment_change", args=[adjustment.pk], current_app=self.admin_site.name)
                )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Make an adjustment",
            "form": form,
        }
        return TemplateResponse(request, "admin/wallets/adjustment/make.html", context)

    # --- deciding (the queue's actions, for checkers) --------------------------------------

    def has_approve_permission(self, request) -> bool:
        return request.user.has_perm("wallets.approve_adjustment")

    @admin.action(permissions=["approve"], description="Approve selected adjustments (posts them)")
    def approve(self, request, queryset):
        return self._decide(request, queryset, verb="approve")

    @admin.action(permissions=["approve"], description="Reject selected adjustments (asks for a reason)")
    def reject(self, request, queryset):
        return self._decide(request, queryset, verb="reject")

    def _decide(self, request, queryset, *, verb: str):
        """First POST (from the list): show what is about to be decided (and, to reject, ask
        for a reason). Second POST (with `apply`): call the service once per adjustment and
        report each refusal."""
        adjustments = list(queryset.select_related(*self.list_select_related).order_by("created_at")[:200])
        form = ReasonForm(request.POST if "apply" in request.POST else None) if verb == "reject" else None
        if "apply" in request.POST and (form is None or form.is_valid()):
            done = []
            for adjustment in adjustments:
                try:
                    if verb == "approve":
                        adjustment_approve(adjustment_id=adjustment.id, checker=request.user)
                    else:
                        adjustment_reject(
                            adjustment_id=adjustment.id, checker=request.user, reason=form.cleaned_data["reason"]
                        )
                except ApiError as error:
                    self.message_user(request, f"Adjustment {adjustment.id}: {error.detail}", messages.ERROR)
                else:
                    done.append(str(adjustment.id))
            if done:
                past = "Approved and posted" if verb == "approve" else "Rejected"
                self.message_user(request, f"{past} {len(done)} adjustment(s): {', '.join(done)}", messages.SUCCESS)
            return None
        own = [a for a in adjustments if verb == "approve" and a.created_by_id == request.user.id]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"{verb.capitalize()} adjustments",
            "verb": verb,
            "form": form,
            "adjustments": [(a, party_label(a.from_account), party_label(a.to_account)) for a in adjustments],
            "own": own,
            "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "action": verb,
        }
        return TemplateResponse(request, "admin/wallets/adjustment/decision_confirmation.html", context)
