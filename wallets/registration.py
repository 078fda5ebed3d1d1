"""Registration: a customer or merchant, their PIN and their one wallet, created together.

Lives in wallets (not accounts) because it opens the wallet, and dependencies point from
wallets to accounts, never back.
"""

from __future__ import annotations

from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction

from accounts.models import User
from accounts.pin import PIN_FORMAT, pin_set
from wallets.models import Wallet
from wallets.services import wallet_open
from walletsite.errors import EmailTaken, ValidationFailed

MAX_PASSWORD_LENGTH = 128
ROLES = (User.Role.CUSTOMER, User.Role.MERCHANT)


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])


def _validate(*, email: str, password: str, pin: str, role: str, business_name: str) -> None:
    """The service's own checks, so callers other than the API (tests, commands) cannot
    create what the API would refuse."""
    if not email or "@" not in email:
        raise _invalid("email", "Enter a valid email address")
    if not isinstance(password, str) or len(password) > MAX_PASSWORD_LENGTH:
        raise _invalid("password", f"Must be at most {MAX_PASSWORD_LENGTH} characters")
    try:
        validate_password(password)
    except DjangoValidationError as exc:
        raise _invalid("password", " ".join(exc.messages)) from None
    if not isinstance(pin, str) or not PIN_FORMAT.fullmatch(pin):
        raise _invalid("pin", "Must be 4 to 6 digits")
    if role not in ROLES:
        raise _invalid("role", "Must be customer or merchant")
    if role == User.Role.MERCHANT and not business_name.strip():
        raise _invalid("business_name", "A merchant needs a business name")
    if role != User.Role.MERCHANT and business_name:
        raise _invalid("business_name", "Only a merchant has a business name")


def _constraint_name(exc: IntegrityError) -> str | None:
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None)


def user_register(
    *,
    email: str,
    password: str,
    pin: str,
    name: str = "",
    phone: str = "",
    role: str = User.Role.CUSTOMER,
    business_name: str = "",
) -> tuple[User, Wallet]:
    """Create the user, their PIN and their wallet (balance 0) in one durable transaction.

    The email is unique case-insensitively. The pre-check gives the common duplicate a
    clean answer; two registrations racing past it are settled by the unique index on
    lower(email), whose violation is the same 409 email_taken.
    """
    email = User.objects.normalize_email((email or "").strip())
    business_name = (business_name or "").strip()
    _validate(email=email, password=password, pin=pin, role=role, business_name=business_name)
    if User.objects.filter(email__iexact=email).exists():
        raise EmailTaken()
    user = User(email=email, name=(name or "").strip(), phone=(phone or "").strip(), role=role)
    user.business_name = business_name
    # Hash before the transaction opens: bcrypt is slow, and nothing needs to wait on it.
    user.set_password(password)
    try:
        with transaction.atomic(durable=True):
            user.save(force_insert=True)
            pin_set(user=user, pin=pin)
            wallet = wallet_open(user=user)
    except IntegrityError as exc:
        if _constraint_name(exc) == "user_email_ci_unique":
            raise EmailTaken() from None
        raise
    return user, wallet
