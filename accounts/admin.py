"""Users, PINs and logins in the Django admin.

Users: searchable by email and wallet handle (exact, indexed), with role and staff flags; a
superuser can add a staff user with an email and a password. The password is only ever
shown as Django's masked summary. PINs show their lockout state, never the digest. Logins
(token families) are read-only, with an action that revokes them.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminUserCreationForm, UserChangeForm
from django.db.models.functions import Lower

from accounts.models import Pin, TokenFamily, User
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


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    form = UserEditForm
    add_form = UserCreationForm
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("name", "phone", "role", "business_name", "wallet_link")}),
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
    readonly_fields = ("wallet_link", "last_login", "date_joined")
    list_display = ("email", "name", "role", "wallet_handle", "is_staff", "is_active", "date_joined")
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
