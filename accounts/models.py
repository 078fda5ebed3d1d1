"""Users (email login, roles, KYC tier), their transaction PIN, and login sessions (token
families)."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import AbstractBaseUser, PermissionsMixin
from django.db import models
from django.db.models import Q
from django.db.models.functions import Lower, Now

from accounts.managers import UserManager


class Tier(models.Model):
    """A KYC tier and the limits that come with it, in minor units of the wallet currency.
    Staff edit the limits in the admin; wallets.limits reads them under the account lock
    of each outgoing or incoming movement."""

    BASIC = "basic"

    # The code is the key: users point at it, and it never changes once users hold it.
    code = models.SlugField(max_length=32, primary_key=True)
    name = models.CharField(max_length=64)
    per_transaction_limit = models.BigIntegerField()
    daily_outgoing_limit = models.BigIntegerField()
    monthly_outgoing_limit = models.BigIntegerField()
    balance_ceiling = models.BigIntegerField()

    class Meta:
        ordering = ("per_transaction_limit", "code")
        constraints = [
            models.CheckConstraint(
                condition=Q(per_transaction_limit__gt=0)
                & Q(daily_outgoing_limit__gt=0)
                & Q(monthly_outgoing_limit__gt=0)
                & Q(balance_ceiling__gt=0),
                name="tier_limits_positive",
            ),
            models.CheckConstraint(
                condition=Q(per_transaction_limit__lte=models.F("daily_outgoing_limit"))
                & Q(daily_outgoing_limit__lte=models.F("monthly_outgoing_limit")),
                name="tier_limits_ordered",
            ),
        ]
        permissions = [("change_user_tier", "Can change the KYC tier of a user")]

    def __str__(self) -> str:
        return self.name


class User(AbstractBaseUser, PermissionsMixin):
    class Role(models.TextChoices):
        CUSTOMER = "customer"
        MERCHANT = "merchant"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Stored as typed; unique regardless of case (constraint below), looked up by iexact.
    email = models.EmailField(max_length=254)
    name = models.CharField(max_length=120, blank=True, default="")
    phone = models.CharField(max_length=20, blank=True, default="")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.CUSTOMER)
    business_name = models.CharField(max_length=120, blank=True, default="")
    # Every user starts at basic (seeded by migration 0002); staff move them with
    # accounts.services.user_tier_change, which writes the audit log.
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, default=Tier.BASIC, related_name="users")
    # Staff (operations, support) are Django staff, created from the command line only.
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(db_default=Now())

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        constraints = [
            models.UniqueConstraint(Lower("email"), name="user_email_ci_unique"),
            models.CheckConstraint(condition=Q(role__in=["customer", "merchant"]), name="user_role_valid"),
            models.CheckConstraint(
                condition=~Q(role="merchant") | ~Q(business_name=""), name="merchant_has_business_name"
            ),
        ]

    def __str__(self) -> str:
        return self.email


class Pin(models.Model):
    """The transaction PIN as HMAC-SHA256(pepper, user id + PIN), never the PIN itself.

    A PIN has at most 10^6 values, so any hash computable from the database alone, bcrypt
    included, falls to an offline search; the pepper lives outside the database. Online
    guessing is bounded by the lockout counted here, in the row, under a row lock.
    """

    user = models.OneToOneField(User, on_delete=models.CASCADE, primary_key=True, related_name="pin")
    digest = models.CharField(max_length=64)
    failed_attempts = models.IntegerField(default=0)
    locked_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(failed_attempts__gte=0), name="pin_failures_not_negative")]

    def __str__(self) -> str:
        return f"PIN of {self.user_id}"


class TokenFamily(models.Model):
    """One login: every refresh token rotated from it, and their access tokens, carry its id
    (`fam` claim). Revoking the family ends the login everywhere at once."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="token_families")
    created_at = models.DateTimeField(db_default=Now())
    # The jti of the one refresh token of this family that may still be used.
    current_jti = models.CharField(max_length=64)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_reason = models.CharField(max_length=32, blank=True, default="")

    class Meta:
        verbose_name_plural = "token families"

    def __str__(self) -> str:
        return f"login {self.id}"
