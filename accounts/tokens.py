"""Logins as token families: login, refresh with rotation and reuse detection, logout.

simplejwt signs and checks the tokens and records them in its token_blacklist tables; what it
lacks is the family. Every login is one TokenFamily; its refresh token and every token rotated
from it carry the family id in the `fam` claim, and so do their access tokens
(accounts.authentication refuses an access token whose family is revoked). The family stores
the jti of the one refresh token that may still be used. Presenting any other refresh token
of the family, that is one already rotated, means it was copied: the whole family is revoked.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth import authenticate
from django.db import transaction
from django.utils import timezone
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken
from rest_framework_simplejwt.tokens import RefreshToken, Token

from accounts.models import TokenFamily, User
from walletsite.errors import InvalidCredentials, InvalidRefreshToken

FAMILY_CLAIM = "fam"


class _FamilyRefreshToken(RefreshToken):
    """A refresh token checked for signature, algorithm, expiry and type, but not against
    simplejwt's blacklist: a rotated (blacklisted) token must reach the family check so its
    reuse is detected and the family revoked, instead of being turned away quietly."""

    def verify(self, *args, **kwargs) -> None:
        Token.verify(self, *args, **kwargs)


def _pair(*, user: User, family: TokenFamily) -> tuple[RefreshToken, dict[str, Any]]:
    # for_user records the token as an OutstandingToken, so it can be blacklisted later.
    refresh = RefreshToken.for_user(user)
    refresh[FAMILY_CLAIM] = str(family.id)
    access = refresh.access_token
    body = {
        "access_token": str(access),
        "refresh_token": str(refresh),
        "token_type": "Bearer",
        "expires_in": int(settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"].total_seconds()),
    }
    return refresh, body


def session_start(*, user: User) -> dict[str, Any]:
    """Open a login for an already authenticated user: a new family and its first pair."""
    with transaction.atomic(durable=True):
        family = TokenFamily.objects.create(user=user, current_jti="")
        refresh, body = _pair(user=user, family=family)
        family.current_jti = refresh["jti"]
        family.save(update_fields=["current_jti"])
    return body


def session_login(*, email: str, password: str) -> dict[str, Any]:
    """Email and password to a new login. Wrong email and wrong password give the same 401
    invalid_credentials, and take as long (the backend hashes for unknown emails too)."""
    user = authenticate(email=email, password=password)
    if user is None:
        raise InvalidCredentials()
    return session_start(user=user)


def _decode(refresh_token: str) -> _FamilyRefreshToken:
    try:
        token = _FamilyRefreshToken(refresh_token)
    except TokenError:
        raise InvalidRefreshToken() from None
    family_id = token.get(FAMILY_CLAIM)
    try:
        uuid.UUID(str(family_id))
    except ValueError:
        raise InvalidRefreshToken() from None
    return token


def refresh_token_user_id(refresh_token: str) -> str | None:
    """The user id a refresh token names, if its signature, type and expiry check out (no
    database access); None otherwise. The refresh rate limit counts per user only what a
    genuine token names: a forged `sub` must not spend another user's allowance."""
    try:
        return str(_decode(refresh_token)["sub"])
    except (InvalidRefreshToken, KeyError):
        return None


def _rotated_since(*, jti: str, moment) -> bool:
    """True when the token with this jti was rotated (blacklisted) at or after `moment`."""
    return BlacklistedToken.objects.filter(token__jti=jti, blacklisted_at__gte=moment).exists()


def session_refresh(*, refresh_token: str) -> dict[str, Any]:
    """Rotate: the presented refresh token for a new pair in the same family.

    Under the family's row lock: a revoked family is refused; a token whose jti is not the
    family's current one was already rotated, so this is a reuse (a stolen copy, or a client
    replaying an old token) and the whole family is revoked, committed, then refused.

    Two concurrent refreshes of the same token are serialized by the row lock: the first
    rotates it, and the second then finds a jti that is no longer current. If that token was
    rotated after the second request arrived, the two raced (a client refreshing from two tabs):
    the second is refused and the login stays, so exactly one new pair exists and it works. A
    token that was already rotated before the request arrived is a reuse and revokes the login.
    A stolen copy gains nothing from the race either way: it is refused.
    """
    asked_at = timezone.now()
    token = _decode(refresh_token)
    family_id = token[FAMILY_CLAIM]
    reused = False
    with transaction.atomic(durable=True):
        family = TokenFamily.objects.select_for_update().select_related("user").filter(id=family_id).first()
        if family is None or family.revoked_at is not None or str(family.user_id) != str(token.get("sub")):
            raise InvalidRefreshToken()
        if not family.user.is_active:
            raise InvalidRefreshToken()
        if token["jti"] != family.current_jti:
            if _rotated_since(jti=token["jti"], moment=asked_at):
                raise InvalidRefreshToken("The refresh token was rotated by a concurrent request")
            family.revoked_at = timezone.now()
            family.revoked_reason = "reuse"
            family.save(update_fields=["revoked_at", "revoked_reason"])
            reused = True
        else:
            new_refresh, body = _pair(user=family.user, family=family)
            token.blacklist()
            family.current_jti = new_refresh["jti"]
            family.save(update_fields=["current_jti"])
    # Raised after the block: the revocation must commit although the request fails.
    if reused:
        raise InvalidRefreshToken("The refresh token was already used; the login has been revoked")
    return body


def session_logout(*, family_id, reason: str = "logout") -> None:
    """End a login: its refresh token and every access token of the family stop working.
    Logging out of an ended login changes nothing."""
    with transaction.atomic(durable=True):
        TokenFamily.objects.filter(id=family_id, revoked_at__isnull=True).update(
            revoked_at=timezone.now(), revoked_reason=reason
        )


def session_logout_refresh(*, user: User, refresh_token: str) -> None:
    """Also end the login of a refresh token the caller sent to logout; it must be a valid
    refresh token of the caller's (an already rotated one will do: it still names its login)."""
    token = _decode(refresh_token)
    if str(token.get("sub")) != str(user.id):
        raise InvalidRefreshToken()
    session_logout(family_id=token[FAMILY_CLAIM])
