from __future__ import annotations

from django.contrib.auth.backends import ModelBackend

from accounts.models import User


class EmailBackend(ModelBackend):
    """Email login, case-insensitive, for the admin and `authenticate()`.

    For an unknown email the hasher still runs once, so the answer takes as long as for a
    wrong password and does not tell which emails are registered."""

    def authenticate(self, request, username=None, password=None, email=None, **kwargs):
        email = email or username
        if email is None or password is None:
            return None
        user = User.objects.filter(email__iexact=email).first()
        if user is None:
            User().set_password(password)
            return None
        if user.check_password(password) and self.user_can_authenticate(user):
            return user
        return None
