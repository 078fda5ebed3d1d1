"""The ledger in the Django admin: read-only views of every money table for operations
staff, and the reconciliation page.

Money tables are never added to, changed or deleted from here: corrections are new ledger
transactions made by services, and the database refuses edits to entries anyway. The tables
grow to millions of rows, so every changelist avoids whole-table work: no COUNT(*) (a
paginator that counts at most CAPPED_COUNT rows), no facet counts, no date hierarchy,
searches and sorting only on indexed columns, related rows joined in the same query.
"""

from __future__ import annotations

import uuid

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from ledger.models import Account, AuditLog, Entry, OutboxEvent, ReconciliationRun, Transaction
from ledger.reconciliation import reconciliation_run

# A changelist counts its rows up to this many, never more.
CAPPED_COUNT = 10_000

admin.site.site_header = "Wallet operations"
admin.site.site_title = "Wallet admin"
admin.site.index_title = "Operations"
# The service has no public site to link to: "/" is not a page.
admin.site.site_url = None


class CappedPaginator(Paginator):
    """A paginator that never counts a whole table: it counts at most CAPPED_COUNT + 1 rows
    (a LIMIT inside the COUNT, over the primary key only) and reports at most CAPPED_COUNT.
    `capped` says when there are more; the admin's pagination template shows "10000+"."""

    cap = CAPPED_COUNT

    @cached_property
    def _bounded_count(self) -> int:
        return self.object_list.order_by().values("pk")[: self.cap + 1].count()

    @cached_property
    def count(self) -> int:
        return min(self._bounded_count, self.cap)

    @property
    def capped(self) -> bool:
        return self._bounded_count > self.cap


class ReadOnlyAdmin(admin.ModelAdmin):
    """View-only: no add, change or delete for anyone, superusers included, and no bulk
    delete action. Staff with the model's view permission see the list and each row."""

    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedPaginator
    list_per_page = 50
    list_max_show_all = 200
    # Column sorting is limited to indexed columns (subclasses list them): sorting by any
    # other column would sort the whole table for each page.
    sortable_by: tuple[str, ...] = ()

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions


def parse_uuid(term: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(term.strip())
    except ValueError:
        return None


def parse_id(term: str) -> int | None:
    term = term.strip()
    return int(term) if term.isdigit() and len(term) < 19 else None


def admin_link(obj, text=None) -> str:
    if obj is None:
        return "-"
    opts = obj._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, text if text is not None else str(obj))


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "code", "currency", "balance", "held_balance", "available", "created_at")
    sortable_by = ("id",)
    search_fields = ("code",)
    search_help_text = "An account id, or a system account's code (gateway_clearing, ...)"
    readonly_fields = ("entries_link",)
    fields = ("id", "kind", "code", "currency", "balance", "held_balance", "created_at", "entries_link")

    def get_search_results(self, request, queryset, search_term):
        # Exact matches on the primary key or the unique code: both indexed.
        term = search_term.strip()
        if not term:
            return queryset, False
        account_id = parse_id(term)
        if account_id is not None:
            return queryset.filter(id=account_id), False
        return queryset.filter(code=term), False

    @admin.display(description="available")
    def available(self, obj: Account) -> int:
        return obj.available_balance

    @admin.display(description="entries")
    def entries_link(self, obj: Account) -> str:
        url = reverse("admin:ledger_entry_changelist")
        return format_html('<a href="{}?q={}">entries of this account, newest first</a>', url, obj.id)


class EntryInline(admin.TabularInline):
    model = Entry
    fields = ("id", "account", "amount", "balance_after", "type", "created_at")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("account").order_by("id")

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Transaction)
class TransactionAdmin(ReadOnlyAdmin):
    list_display = ("id", "type", "note", "reference", "created_at")
    # ledger_txn_created indexes created_at, so newest first reads the index.
    ordering = ("-created_at",)
    sortable_by = ("created_at",)
    search_fields = ("id",)
    search_help_text = "A ledger transaction id"
    inlines = (EntryInline,)
    fields = ("id", "type", "note", "reference", "created_at")

    def get_search_results(self, request, queryset, search_term):
        if not search_term.strip():
            return queryset, False
        txn_id = parse_uuid(search_term)
        return (queryset.filter(id=txn_id) if txn_id else queryset.none()), False


@admin.register(Entry)
class EntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "transaction_link", "account", "amount", "balance_after", "type", "created_at")
    list_select_related = ("account",)
    sortable_by = ("id",)
    search_fields = ("account__id",)
    search_help_text = "An account id (its entries) or a ledger transaction id (its legs)"
    fields = ("id", "transaction", "account", "amount", "balance_after", "type", "created_at")

    def get_search_results(self, request, queryset, search_term):
        # Both served by indexes: (account_id, id DESC) and the transaction foreign key.
        term = search_term.strip()
        if not term:
            return queryset, False
        account_id = parse_id(term)
        if account_id is not None:
            return queryset.filter(account_id=account_id), False
        txn_id = parse_uuid(term)
        return (queryset.filter(transaction_id=txn_id) if txn_id else queryset.none()), False

    @admin.display(description="transaction")
    def transaction_link(self, obj: Entry) -> str:
        url = reverse("admin:ledger_transaction_change", args=[obj.transaction_id])
        return format_html('<a href="{}">{}</a>', url, obj.transaction_id)


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "actor_label", "action", "target", "reason")
    sortable_by = ("id",)
    search_fields = ("target",)
    search_help_text = "A target, exactly: wallet:<id> or account:<id>"
    fields = ("id", "created_at", "actor", "actor_label", "action", "target", "reason", "data")

    def get_search_results(self, request, queryset, search_term):
        # audit_by_target indexes (target, id DESC); an exact match uses it.
        term = search_term.strip()
        return (queryset.filter(target=term) if term else queryset), False


class PendingFilter(admin.SimpleListFilter):
    """Undelivered events: the outbox_pending partial index covers exactly these."""

    title = "delivery"
    parameter_name = "pending"

    def lookups(self, request, model_admin):
        return [("yes", "not delivered yet")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(delivered_at__isnull=True)
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "type", "created_at", "available_at", "attempts", "delivered_at", "last_error")
    list_filter = (PendingFilter,)
    sortable_by = ("id",)
    fields = (
        "id",
        "type",
        "payload",
        "created_at",
        "available_at",
        "leased_until",
        "attempts",
        "delivered_at",
        "last_error",
    )


def mismatches_table(mismatches: list[dict]) -> str:
    if not mismatches:
        return "none"
    rows = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        (
            (
                m.get("kind"),
                m.get("account") or m.get("transaction_id") or m.get("currency") or m.get("of_kind") or "ledger",
                m.get("expected"),
                m.get("actual"),
                m.get("detail", ""),
            )
            for m in mismatches
        ),
    )
    return format_html(
        '<table class="mismatches"><thead><tr><th>kind</th><th>where</th><th>expected</th><th>actual</th>'
        "<th>detail</th></tr></thead><tbody>{}</tbody></table>",
        rows,
    )


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    list_display = (
        "started_at",
        "ok",
        "checked_accounts",
        "checked_transactions",
        "total_balance",
        "mismatch_count",
        "triggered_by",
    )
    # recon_recent indexes started_at descending.
    ordering = ("-started_at",)
    sortable_by = ("started_at",)
    # Runs are few (one a day, a few by hand), so filtering them needs no index.
    list_filter = ("ok",)
    fields = (
        "started_at",
        "finished_at",
        "ok",
        "checked_accounts",
        "checked_transactions",
        "total_balance",
        "triggered_by",
        "mismatch_list",
    )
    readonly_fields = ("mismatch_list",)

    @admin.display(description="mismatches")
    def mismatch_count(self, obj: ReconciliationRun) -> int:
        return len(obj.mismatches)

    @admin.display(description="mismatches")
    def mismatch_list(self, obj: ReconciliationRun) -> str:
        return mismatches_table(obj.mismatches)

    def get_urls(self):
        run = path("run/", self.admin_site.admin_view(self.run_view), name="ledger_reconciliationrun_run")
        return [run, *super().get_urls()]

    def has_run_permission(self, request) -> bool:
        return request.user.has_perm("ledger.run_reconciliation")

    def run_view(self, request):
        """GET: the latest result (or the run in ?run=) and the last 20 runs. POST (CSRF
        protected by the middleware): run now, as the signed-in staff member, and show it."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            if not self.has_run_permission(request):
                raise PermissionDenied
            result = reconciliation_run(triggered_by=request.user.email)
            if result.ok:
                self.message_user(request, "The ledger reconciles: no mismatches.", messages.SUCCESS)
            else:
                self.message_user(
                    request, f"The ledger does NOT reconcile: {len(result.mismatches)} mismatches.", messages.ERROR
                )
            return HttpResponseRedirect(f"{reverse('admin:ledger_reconciliationrun_run')}?run={result.id}")
        if request.method != "GET":
            return HttpResponseNotAllowed(["GET", "POST"])
        recent = list(ReconciliationRun.objects.order_by("-started_at")[:20])
        run_id = parse_id(request.GET.get("run", ""))
        shown = ReconciliationRun.objects.filter(id=run_id).first() if run_id else (recent[0] if recent else None)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Reconciliation",
            "run": shown,
            "took_ms": round((shown.finished_at - shown.started_at).total_seconds() * 1000) if shown else None,
            "mismatches": mismatches_table(shown.mismatches) if shown else "",
            "recent": recent,
            "can_run": self.has_run_permission(request),
        }
        return TemplateResponse(request, "admin/ledger/reconciliationrun/run.html", context)
