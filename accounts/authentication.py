"""Bearer access tokens: simplejwt validates the signature, algorithm and expiry; we add
that the token's login (its `fam` claim) has not ended, so logout and a revoked family stop
access tokens too, not only refresh tokens.

`AccessTokenAuthentication` checks the login with one query per request. The transfer route
uses `ClaimsTokenAuthentication` instead: the request is authenticated from the verified
claims alone (a `ClaimsUser`) and the login is checked inside the transfer's own database
transaction (wallets.transfers), where it costs no query of its own. Any answer the route
gives before that transaction first runs the full check (`ClaimsUser.verify`), so an ended
login still answers 401 before anything else, as on every other route."""

from __future__ import annotations

import uuid

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from walletsite.db import Query
from walletsite.errors import InvalidToken


class AccessTokenAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
        claims = self._claims(request)
        if claims is None:
            return None
        token, user_id, family_id = claims
        user = _open_login_user(user_id=user_id, family_id=family_id)
        request.token_family_id = family_id
        return user, token

    def _claims(self, request):
        header = get_authorization_header(request).split()
        if not header:
            return None
        if header[0].lower() != self.keyword or len(header) != 2:
            raise InvalidToken("The Authorization header must be 'Bearer <access token>'")
        try:
            token = AccessToken(header[1].decode("ascii"))
        except (TokenError, UnicodeDecodeError):
            raise InvalidToken() from None
        user_id, family_id = token.get("sub"), token.get("fam")
        if not user_id or not family_id:
            raise InvalidToken()
        return token, user_id, family_id

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


def open_logins_query(*, family_ids) -> Query[set[uuid.UUID]]:
    """Which of these logins are still open, for active users: the check of
    `_open_login_user` for many requests at once (the transfer batch), as a statement to run
    with others (walletsite.db.pipelined)."""
    return Query(
        "SELECT f.id FROM accounts_tokenfamily AS f JOIN accounts_user AS u ON u.id = f.user_id"
        " WHERE f.id = ANY(%s::uuid[]) AND f.revoked_at IS NULL AND u.is_active",
        [list(set(family_ids))],
        read=lambda rows: {family_id for (family_id,) in rows},
    )


def _open_login_user(*, user_id, family_id) -> User:
    """One query: the user, active, with this login still open (and its wallet)."""
    user = (
        User.objects.filter(
            id=user_id,
            is_active=True,
            token_families__id=family_id,
            token_families__revoked_at__isnull=True,
        )
        .select_related("wallet")
        .first()
    )
    if user is None:
        raise InvalidToken("The token's login has ended")
    return user


class ClaimsUser:
    """The user an access token names, from its verified claims, not yet read from the
    database. Code that needs more than the id calls `verify`."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, *, user_id: uuid.UUID, family_id: uuid.UUID) -> None:
        self.id = self.pk = user_id
        self.family_id = family_id
        self._user: User | None = None

    def verify(self) -> User:
        """The full check of AccessTokenAuthentication: 401 invalid_token when the login ended."""
        if self._user is None:
            self._user = _open_login_user(user_id=self.id, family_id=self.family_id)
        return self._user

    def __str__(self) -> str:
        return f"user {self.id}"


class ClaimsTokenAuthentication(AccessTokenAuthentication):
    """AccessTokenAuthentication without its query: for routes that check the login in their
    own transaction (see the module docstring)."""

    def authenticate(self, request):
        claims = self._claims(request)
        if claims is None:
            return None
        token, user_id, family_id = claims
        try:
            user_id, family_id = uuid.UUID(str(user_id)), uuid.UUID(str(family_id))
        except ValueError:
            raise InvalidToken() from None
        request.token_family_id = family_id
        return ClaimsUser(user_id=user_id, family_id=family_id), token
