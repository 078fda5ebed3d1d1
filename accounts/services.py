"""Staff users: created from the command line only, never over HTTP."""

from __future__ import annotations

from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from accounts.models import User

STAFF_ROLES = ("operations", "support")


class StaffError(Exception):
    """Why a staff user could not be created; the message is shown to the operator."""


def staff_create(*, email: str, role: str, password: str | None, name: str = "") -> User:
    """A Django staff user (is_staff, not superuser) in the group named after the role; the
    group carries the permissions (created by wallets' migration 0002_staff_groups).

    Without a password the account gets an unusable one, to be set with `changepassword`.
    """
    if role not in STAFF_ROLES:
        raise StaffError(f"role must be one of {', '.join(STAFF_ROLES)}, got {role!r}")
    email = User.objects.normalize_email((email or "").strip())
    if "@" not in email:
        raise StaffError(f"{email!r} is not an email address")
    if User.objects.filter(email__iexact=email).exists():
        raise StaffError(f"a user with the email {email!r} already exists")
    group = Group.objects.filter(name=role).first()
    if group is None:
        raise StaffError(f"the group {role!r} does not exist; run `manage.py migrate` first")
    user = User(email=email, name=name, is_staff=True)
    if password is None:
        user.set_unusable_password()
    else:
        try:
            validate_password(password, user)
        except ValidationError as exc:
            raise StaffError(f"password refused: {' '.join(exc.messages)}") from None
        if len(password) > 128:
            raise StaffError("password refused: at most 128 characters")
        user.set_password(password)
    try:
        with transaction.atomic(durable=True):
            user.save(force_insert=True)
            user.groups.add(group)
    except IntegrityError:
        # Only a concurrent creation of the same email gets here (user_email_ci_unique).
        raise StaffError(f"a user with the email {email!r} already exists") from None
    return user
