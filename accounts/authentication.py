"""Bearer access tokens: simplejwt validates the signature, algorithm and expiry; we add
that the token's login (its `fam` claim) has not ended, so logout and a revoked family stop
access tokens too, not only refresh tokens."""

from __future__ import annotations

from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from accounts.models import User
from walletsite.errors import InvalidToken


class AccessTokenAuthentication(BaseAuthentication):
    keyword = b"bearer"

    def authenticate(self, request):
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
        # One query: the user, active, with this login still open.
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
        request.token_family_id = family_id
        return user, token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'
