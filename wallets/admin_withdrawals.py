"""Withdrawals, bank accounts and bank callback events in the Django admin, read-only.

- Withdrawals: filters for the stuck (in flight, with the bank, longer than
  WITHDRAWAL_RECHECK_SECONDS) and the flagged for review; the action "re-check with the
  bank" calls the recovery service (wallets.withdrawals.withdrawals_recheck) for the
  selected withdrawals, which asks the bank and settles what it settled. The admin never
  sets a status itself.
- Bank accounts: the account number is masked (last 4 digits); the full number and its
  fingerprint are not on any page.

Permissions: the view permissions (operations and support) and `recheck_withdrawal`
(operations), handed out by wallets/migrations/0010_withdrawals_staff_groups.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.utils import timezone

from ledger.admin import ReadOnlyAdmin, parse_uuid
from wallets.models import BankAccount, BankEvent, Withdrawal
from wallets.withdrawals import withdrawals_recheck


def _by_wallet_or_id(queryset, term: str, *, id_field: str = "id"):
    """Exact, indexed matches only: a wallet handle, or an id."""
    term = term.strip()
    if not term:
        return queryset
    if term.lower().endswith("@wallet"):
        return queryset.filter(wallet__handle=term.lower())
    value = parse_uuid(term)
    return queryset.filter(**{id_field: value}) if value else queryset.none()


class StuckFilter(admin.SimpleListFilter):
    """In flight with the bank (submitting or submitted) and unchanged for longer than the
    recheck interval: the ones recovery should already have looked at."""

    title = "stuck"
    parameter_name = "stuck"

    def lookups(self, request, model_admin):
        return [("yes", "stuck with the bank")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            before = timezone.now() - timedelta(seconds=settings.WALLET["WITHDRAWAL_RECHECK_SECONDS"])
            return queryset.filter(
                status__in=[Withdrawal.Status.SUBMITTING, Withdrawal.Status.SUBMITTED], updated_at__lte=before
            )
        return queryset


class FlaggedFilter(admin.SimpleListFilter):
    """Withdrawals flagged for review: the withdrawal_flagged partial index holds exactly these."""

    title = "flagged for review"
    parameter_name = "flagged"

    def lookups(self, request, model_admin):
        return [("yes", "flagged for review")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(flagged_for_review=True)
        return queryset


@admin.register(Withdrawal)
class WithdrawalAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "wallet",
        "amount",
        "currency",
        "status",
        "bank_status",
        "bank_account_masked",
        "submissions",
        "flagged_for_review",
        "created_at",
        "updated_at",
    )
    list_select_related = ("wallet", "bank_account")
    list_filter = (StuckFilter, FlaggedFilter, "status")
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    search_fields = ("id", "wallet__handle")
    search_help_text = "A withdrawal id, or a wallet handle (its withdrawals)"
    actions = ("recheck",)
    fields = (
        "id",
        "wallet",
        "bank_account_masked",
        "amount",
        "currency",
        "status",
        "bank_status",
        "hold",
        "transaction",
        "submissions",
        "submitted_at",
        "failure_reason",
        "last_error",
        "flagged_for_review",
        "review_reason",
        "created_at",
        "updated_at",
        "settled_at",
    )

    def get_search_results(self, request, queryset, search_term):
        return _by_wallet_or_id(queryset, search_term), False

    @admin.display(description="bank account")
    def bank_account_masked(self, obj: Withdrawal) -> str:
        return str(obj.bank_account)

    def has_recheck_permission(self, request) -> bool:
        return request.user.has_perm("wallets.recheck_withdrawal")

    @admin.action(description="Re-check with the bank", permissions=["recheck"])
    def recheck(self, request, queryset):
        ids = list(queryset.values_list("id", flat=True)[:100])
        results = withdrawals_recheck(withdrawal_ids=ids, actor=request.user)
        summary: dict[str, int] = {}
        for result in results.values():
            summary[result] = summary.get(result, 0) + 1
        text = ", ".join(f"{count} {result.replace('_', ' ')}" for result, count in sorted(summary.items()))
        level = messages.WARNING if {"error", "unreachable", "flagged"} & set(summary) else messages.SUCCESS
        self.message_user(request, f"Re-checked {len(results)} withdrawal(s) with the bank: {text}.", level)


@admin.register(BankAccount)
class BankAccountAdmin(ReadOnlyAdmin):
    list_display = ("id", "wallet", "masked_number", "ifsc", "holder_name", "created_at")
    list_select_related = ("wallet",)
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    search_fields = ("id", "wallet__handle")
    search_help_text = "A bank account id, or a wallet handle (its bank accounts)"
    # Neither the account number nor its fingerprint is shown anywhere.
    fields = ("id", "wallet", "masked_number", "ifsc", "holder_name", "created_at")

    def get_search_results(self, request, queryset, search_term):
        return _by_wallet_or_id(queryset, search_term), False

    @admin.display(description="account number")
    def masked_number(self, obj: BankAccount) -> str:
        return obj.masked_number


@admin.register(BankEvent)
class BankEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "type", "withdrawal_id", "outcome", "received_at")
    sortable_by = ("id",)
    search_fields = ("id", "withdrawal__id")
    search_help_text = "A bank event id, or a withdrawal id (its events)"
    fields = ("id", "type", "withdrawal", "outcome", "payload", "received_at")

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        withdrawal_id = parse_uuid(term)
        if withdrawal_id:
            return queryset.filter(withdrawal_id=withdrawal_id), False
        return queryset.filter(id=term), False
