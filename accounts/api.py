"""Login, refresh and logout: POST /api/v1/auth/login, /auth/refresh, /auth/logout.

Thin views: validate the body with a strict input serializer, call one service of
accounts.tokens, render the result.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response

from accounts.tokens import session_login, session_logout, session_logout_refresh, session_refresh
from walletsite.schema import AUTHENTICATED, RETRY_AFTER_HEADER, problems
from walletsite.serializers import EmailStringField, StrictSerializer, StringField
from walletsite.throttles import LOGIN_THROTTLES, REFRESH_THROTTLES
from walletsite.views import ApiViewSet

# What any route that reads a JSON body can answer before the view runs.
BODY_ERRORS = ("validation_failed", "unsupported_media_type", "payload_too_large")


class LoginIn(StrictSerializer):
    """Email (any case) and password."""

    email = EmailStringField(max_length=254)
    # Not trimmed: spaces are part of a password.
    password = StringField(max_length=128, trim_whitespace=False)


class RefreshIn(StrictSerializer):
    """The current refresh token of a login; it is used up by this call."""

    refresh_token = StringField(max_length=4096)


class LogoutIn(StrictSerializer):
    """Empty, `{}`, or a refresh token of the caller's whose login is to end as well."""

    refresh_token = StringField(
        max_length=4096,
        required=False,
        help_text="Optional. The login of the access token is always ended; a refresh token of "
        "the caller's sent here has its own login ended too (e.g. a second device's).",
    )


class TokenPairOut(serializers.Serializer):
    access_token = serializers.CharField()
    refresh_token = serializers.CharField()
    token_type = serializers.ChoiceField(choices=["Bearer"])
    expires_in = serializers.IntegerField(help_text="Seconds until the access token expires")


class AuthViewSet(ApiViewSet):
    """Login sessions as token families (see accounts.tokens)."""

    @extend_schema(
        operation_id="auth_login",
        request=LoginIn,
        parameters=[RETRY_AFTER_HEADER],
        responses={
            200: TokenPairOut,
            **problems(*BODY_ERRORS, "invalid_credentials", "rate_limited"),
        },
        auth=[],
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="login",
        # No authentication at all: a stale bearer header must not turn a login into 401.
        authentication_classes=[],
        permission_classes=[AllowAny],
        throttle_classes=LOGIN_THROTTLES,
    )
    def login(self, request):
        data = _valid(LoginIn, request)
        body = session_login(email=data["email"], password=data["password"])
        return Response(TokenPairOut(body).data, status=status.HTTP_200_OK)

    @extend_schema(
        operation_id="auth_refresh",
        request=RefreshIn,
        parameters=[RETRY_AFTER_HEADER],
        responses={
            200: TokenPairOut,
            **problems(*BODY_ERRORS, "invalid_refresh_token", "rate_limited"),
        },
        auth=[],
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="refresh",
        authentication_classes=[],
        permission_classes=[AllowAny],
        throttle_classes=REFRESH_THROTTLES,
    )
    def refresh(self, request):
        data = _valid(RefreshIn, request)
        body = session_refresh(refresh_token=data["refresh_token"])
        return Response(TokenPairOut(body).data, status=status.HTTP_200_OK)

    @extend_schema(
        operation_id="auth_logout",
        description="Ends the login of the bearer access token: its refresh token and all of its "
        "access tokens stop working. The body may be empty, `{}`, or `{refresh_token}`.",
        request=LogoutIn,
        responses={
            204: OpenApiResponse(description="Logged out"),
            **problems(
                *AUTHENTICATED,
                *BODY_ERRORS,
                "invalid_refresh_token",
            ),
        },
    )
    @action(detail=False, methods=["post"], url_path="logout", permission_classes=[IsAuthenticated])
    def logout(self, request):
        data = _valid(LogoutIn, request)
        if "refresh_token" in data:
            # Checked first, so a bad refresh token refuses the request before anything ends.
            session_logout_refresh(user=request.user, refresh_token=data["refresh_token"])
        session_logout(family_id=request.token_family_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _valid(serializer_class: type[StrictSerializer], request) -> dict:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data
