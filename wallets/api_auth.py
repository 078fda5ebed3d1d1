"""Registration and the caller's own profile: POST /api/v1/auth/register, GET /api/v1/me."""

from __future__ import annotations

from django.core.validators import RegexValidator
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response

from accounts.api import BODY_ERRORS
from accounts.models import User
from wallets.models import Wallet
from wallets.registration import MAX_PASSWORD_LENGTH, user_register
from wallets.serializers import UserWalletOut
from walletsite.schema import AUTHENTICATED, RETRY_AFTER_HEADER, problems
from walletsite.serializers import EmailStringField, PinField, StrictSerializer, StringField
from walletsite.throttles import REGISTER_THROTTLES
from walletsite.views import ApiViewSet


class RegisterIn(StrictSerializer):
    """A new customer, or a merchant (`role: merchant` with `business_name`). Staff are
    never registered over HTTP."""

    email = EmailStringField(max_length=254)
    # Not trimmed: spaces are part of a password. Length 8-128 (the minimum is Django's
    # password validator, checked again by the service).
    password = StringField(min_length=8, max_length=MAX_PASSWORD_LENGTH, trim_whitespace=False)
    # A string, since a PIN such as 0123 is not a JSON number; ASCII digits only.
    pin = PinField(write_only=True)
    name = StringField(max_length=120, required=False, allow_blank=True, default="")
    phone = StringField(
        validators=[RegexValidator(r"^\+?[0-9][0-9 ()-]{3,18}$", "Must be a phone number")],
        max_length=20,
        required=False,
        allow_blank=True,
        default="",
    )
    # Staff are never created over HTTP: "admin", or anything but these two, is refused.
    role = serializers.ChoiceField(choices=User.Role.choices, required=False, default=User.Role.CUSTOMER)
    business_name = StringField(
        max_length=120, required=False, allow_blank=True, default="", help_text="Required for a merchant"
    )

    def validate(self, attrs):
        if attrs.get("role") == User.Role.MERCHANT and not attrs.get("business_name", "").strip():
            raise serializers.ValidationError({"business_name": ["A merchant needs a business name"]})
        if attrs.get("role") != User.Role.MERCHANT and attrs.get("business_name"):
            raise serializers.ValidationError({"business_name": ["Only a merchant has a business name"]})
        return attrs


class RegistrationViewSet(ApiViewSet):
    @extend_schema(
        operation_id="auth_register",
        request=RegisterIn,
        parameters=[RETRY_AFTER_HEADER],
        responses={
            201: UserWalletOut,
            **problems(*BODY_ERRORS, "email_taken", "rate_limited"),
        },
        auth=[],
    )
    @action(
        detail=False,
        methods=["post"],
        url_path="register",
        authentication_classes=[],
        permission_classes=[AllowAny],
        throttle_classes=REGISTER_THROTTLES,
    )
    def register(self, request):
        serializer = RegisterIn(data=request.data)
        serializer.is_valid(raise_exception=True)
        user, wallet = user_register(**serializer.validated_data)
        wallet = Wallet.objects.select_related("account").get(id=wallet.id)
        return Response(UserWalletOut({"user": user, "wallet": wallet}).data, status=status.HTTP_201_CREATED)


class MeViewSet(ApiViewSet):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="me",
        request=None,
        responses={200: UserWalletOut, **problems(*AUTHENTICATED)},
    )
    def me(self, request):
        wallet = Wallet.objects.select_related("account").filter(user_id=request.user.id).first()
        return Response(UserWalletOut({"user": request.user, "wallet": wallet}).data)
