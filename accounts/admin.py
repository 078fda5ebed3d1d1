"""Users, PINs and logins in the Django admin.

Users: searchable by email and wallet handle (exact, indexed), with role and staff flags; a
superuser can add a staff user with an email and a password. The password is only ever
shown as Django's masked summary. PINs show their lockout state, never the digest. Logins
(token families) are read-only, with an action that revokes them. KYC tiers are listed for
staff and edited by superusers (`change_tier`); a user's tier changes only through the "Change
KYC tier" action (`change_user_tier`), which asks for a reason and calls
accounts.tiers.user_tier_change (audited).
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db.models.functions import Lower
from django.template.response import TemplateResponse

from accounts.models import Pin, Tier, TokenFamily, User
from accounts.tiers import user_tier_change
from accounts.tokens import session_logout
from ledger.admin import CappedPaginator, ReadOnlyAdmin, admin_link, parse_uuid
from ledger.audit import audit_record


class UserCreationForm(AdminUserCreationForm):
    class Meta:
        model = User
        fields = ("email", "name")

    def clean_email(self) -> str:
        # Emails are unique regardless of case (a constraint on Lower(email)).
        email = User.objects.normalize_email(self.cleaned_data["email"].strip())
        if User.objects.filter(email__iexact=email).exists():
            raise forms.ValidationError("A user with this email already exists.")
        return email


class UserEditForm(UserChangeForm):
    class Meta:
        model = User
        fields = "__all__"


class TierChangeForm(forms.Form):
    tier = forms.ModelChoiceField(queryset=Tier.objects.all(), empty_label=None)
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=1000,
        help_text="Required (e.g. the KYC check done). Kept in the audit log with your name.",
    )

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("A reason is required.")
        return reason


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserEditForm
    add_form = UserCreationForm
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("name", "phone", "role", "business_name", "wallet_link", "tier")}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )
    add_fieldsets = (
        (
            None,
            {
                "classes": ("wide",),
                "fields": ("email", "name", "usable_password", "password1", "password2"),
            },
        ),
    )
    # The tier is shown, never edited here: changing it is the audited "Change KYC tier" action.
    readonly_fields = ("wallet_link", "last_login", "date_joined", "tier")
    list_display = ("email", "name", "role", "tier_code", "wallet_handle", "is_staff", "is_active", "date_joined")
    actions = ("change_tier",)
    list_select_related = ("wallet",)
    # No list filters: role and the flags are not indexed, and filtering millions of users
    # by them would scan the table for every page. Search instead.
    list_filter = ()
    # Lower(email) is the unique index, so the list reads in email order from it.
    ordering = (Lower("email"),)
    sortable_by = ()
    search_fields = ("email", "wallet__handle")
    search_help_text = "An email or a wallet handle (name@wallet), exactly; or a user id"
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    paginator = CappedPaginator
    list_per_page = 50

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.lower().endswith("@wallet"):
            return queryset.filter(wallet__handle=term.lower()), False
        if "@" in term:
            return queryset.alias(_email_lower=Lower("email")).filter(_email_lower=term.lower()), False
        user_id = parse_uuid(term)
        return (queryset.filter(id=user_id) if user_id else queryset.none()), False

    def has_delete_permission(self, request, obj=None) -> bool:
        # A user owns a wallet and a ledger account; accounts end by deactivation, not deletion.
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions

    def has_change_tier_permission(self, request) -> bool:
        return request.user.has_perm("accounts.change_user_tier")

    @admin.action(permissions=["change_tier"], description="Change KYC tier of selected users (asks for a reason)")
    def change_tier(self, request, queryset):
        """First POST (from the list): the tier and reason form. Second POST (with `apply`):
        user_tier_change once per user, each in its own transaction and audited."""
        form = TierChangeForm(request.POST if "apply" in request.POST else None)
        users = list(queryset.select_related("tier").order_by(Lower("email"))[:200])
        if "apply" in request.POST and form.is_valid():
            tier, reason = form.cleaned_data["tier"], form.cleaned_data["reason"]
            for user in users:
                user_tier_change(user=user, tier=tier, actor=request.user, reason=reason)
            self.message_user(
                request,
                f"{len(users)} user(s) now on {tier}: {', '.join(u.email for u in users[:20])}",
                messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": "Change KYC tier",
            "form": form,
            "users": users,
            "selected": request.POST.getlist(ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/accounts/user/tier_change.html", context)

    @admin.display(description="tier")
    def tier_code(self, obj: User) -> str:
        # The code is the key: no join to show it.
        return obj.tier_id

    @admin.display(description="wallet")
    def wallet_handle(self, obj: User) -> str:
        wallet = getattr(obj, "wallet", None)
        return wallet.handle if wallet else "-"

    @admin.display(description="wallet")
    def wallet_link(self, obj: User) -> str:
        return admin_link(getattr(obj, "wallet", None))


@admin.register(Pin)
class PinAdmin(ReadOnlyAdmin):
    # The digest is never shown: with the pepper it would let anyone search the PIN space.
    list_display = ("user", "failed_attempts", "locked_until", "updated_at")
    list_select_related = ("user",)
    fields = ("user", "failed_attempts", "locked_until", "updated_at")
    search_fields = ("user__email",)
    search_help_text = "A user email, exactly"

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.alias(_email_lower=Lower("user__email")).filter(_email_lower=term.lower()), False


@admin.register(TokenFamily)
class TokenFamilyAdmin(ReadOnlyAdmin):
    list_display = ("id", "user", "created_at", "revoked_at", "revoked_reason")
    list_select_related = ("user",)
    fields = ("id", "user", "created_at", "revoked_at", "revoked_reason")
    search_fields = ("user__email",)
    search_help_text = "A user email, exactly (their logins)"
    actions = ("revoke",)

    def get_search_results(self, request, queryset, search_term):
        term = search_term.strip()
        if not term:
            return queryset, False
        return queryset.alias(_email_lower=Lower("user__email")).filter(_email_lower=term.lower()), False

    def has_revoke_permission(self, request) -> bool:
        return request.user.has_perm("accounts.change_tokenfamily")

    @admin.action(permissions=["revoke"], description="Revoke selected logins (signs the user out)")
    def revoke(self, request, queryset):
        families = list(queryset.filter(revoked_at__isnull=True).select_related("user"))
        for family in families:
            session_logout(family_id=family.id, reason="revoked_by_staff")
            audit_record(
                actor=request.user,
                actor_label=request.user.email,
                action="login.revoke",
                target=f"user:{family.user_id}",
                reason="revoked from the admin",
                data={"family": str(family.id)},
            )
        self.message_user(request, f"Revoked {len(families)} login(s).", messages.SUCCESS)


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    """The limits of each KYC tier, in minor units. Staff see them; editing them needs
    `change_tier` (superusers): they are policy. Tiers are never deleted (users point at
    them, PROTECT); a new one is added, and users are moved with the user action."""

    list_display = (
        "code",
        "name",
        "per_transaction_limit",
        "daily_outgoing_limit",
        "monthly_outgoing_limit",
        "balance_ceiling",
    )
    ordering = ("per_transaction_limit", "code")

    def get_readonly_fields(self, request, obj=None):
        # The code is the key users point at: set once, when the tier is added.
        return ("code",) if obj is not None else ()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)
        return actions
