"""Money in: add-money, the payment attempt it creates, and the gateway's webhook."""

from __future__ import annotations

import logging

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from ledger.posting import MAX_BALANCE
from wallets.api_wallet import caller_wallet
from wallets.gateway import SIGNATURE_HEADER, signature_parameter, signed_event
from wallets.models import PaymentAttempt
from wallets.money import money_response
from wallets.topups import (
    EVENT_TYPES,
    gateway_event_process,
    payment_attempt_create,
    payment_attempt_get,
    payment_attempt_out,
)
from walletsite.schema import AUTHENTICATED, IDEMPOTENCY_HEADER, RETRY_AFTER_HEADER, problems
from walletsite.serializers import AmountField, StrictSerializer, StringField
from walletsite.throttles import WEBHOOK_THROTTLES
from walletsite.views import ApiViewSet

logger = logging.getLogger("wallets.api_topups")


class AddMoneyIn(StrictSerializer):
    """How much to add to the caller's wallet."""

    amount = AmountField(help_text="Minor units to add: a positive integer up to the per-transaction maximum")


class PaymentAttemptOut(serializers.Serializer):
    """A payment attempt: one add-money, credited once when the gateway reports success."""

    payment_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=PaymentAttempt.Status.choices)
    amount = serializers.IntegerField(help_text="Minor units")
    currency = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(help_text="A pending attempt not paid by then becomes expired")
    checkout_url = serializers.URLField(
        allow_null=True, help_text="Where the customer pays; null once the attempt is no longer pending"
    )


@extend_schema_field({"type": "integer", "minimum": 1})
class GatewayAmountField(serializers.Field):
    """A JSON integer above zero. Not capped at the per-transaction maximum, unlike an
    amount a client asks for: a gateway that reports more than the attempt is an amount
    mismatch to flag (422), not a malformed event."""

    default_error_messages = {"type": "Must be a positive integer count of minor units"}

    def to_internal_value(self, data):
        if type(data) is not int or not 0 < data <= MAX_BALANCE:
            self.fail("type")
        return data

    def to_representation(self, value):
        return int(value)


class GatewayEventDataIn(StrictSerializer):
    """The payment an event reports on, as the gateway saw it."""

    payment_id = StringField(max_length=255, help_text="The payment_id add-money returned")
    amount = GatewayAmountField(help_text="Minor units the gateway took")
    currency = serializers.RegexField(r"^[A-Z]{3}\Z", help_text="ISO 4217")
    gateway_reference = StringField(max_length=255, help_text="The gateway's own id of the charge")


class GatewayEventIn(StrictSerializer):
    """A gateway webhook event. Unknown fields are refused, like any request's."""

    id = StringField(max_length=255, help_text="The event id; a redelivery carries the same one")
    type = serializers.ChoiceField(choices=EVENT_TYPES)
    data = GatewayEventDataIn()


class GatewayWebhookOut(serializers.Serializer):
    """The acknowledgement of an event: the gateway stops retrying it."""

    received = serializers.BooleanField()
    result = serializers.ChoiceField(
        choices=["credited", "already_credited", "failed", "flagged", "ignored", "duplicate"],
        help_text=(
            "credited: the wallet was credited now; already_credited: the payment was credited before, nothing "
            "changed; failed: the attempt is now failed; flagged: a contradiction was flagged for review, nothing "
            "moved; ignored: nothing to change; duplicate: this event id was processed before"
        ),
    )
    payment_id = serializers.UUIDField(allow_null=True, required=False)
    status = serializers.ChoiceField(choices=PaymentAttempt.Status.choices, allow_null=True, required=False)


class TopupViewSet(ApiViewSet):
    @extend_schema(
        operation_id="wallet_add_money",
        summary="Start adding money through the payment gateway",
        description=(
            "Creates a pending payment attempt and returns the gateway's checkout_url. The wallet is credited only "
            "when the gateway's signed webhook reports the payment succeeded."
        ),
        parameters=[IDEMPOTENCY_HEADER],
        request=AddMoneyIn,
        responses={
            201: PaymentAttemptOut,
            **problems(
                *AUTHENTICATED,
                "validation_failed",
                "idempotency_key_required",
                "invalid_idempotency_key",
                "forbidden",
                "idempotency_key_in_use",
                "idempotency_key_reused",
                "wallet_frozen",
            ),
        },
    )
    def add_money(self, request):
        wallet = caller_wallet(request)
        body = AddMoneyIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)

        def operation() -> tuple[int, dict]:
            attempt = payment_attempt_create(wallet=wallet, amount=data["amount"])
            return 201, payment_attempt_out(attempt)

        return money_response(request, route="wallet.add_money", data=data, operation=operation)

    @extend_schema(
        operation_id="wallet_payment_get",
        summary="A payment attempt (pending, succeeded, failed or expired)",
        parameters=[OpenApiParameter("payment_id", OpenApiTypes.STR, OpenApiParameter.PATH)],
        responses={200: PaymentAttemptOut, **problems(*AUTHENTICATED, "forbidden", "payment_not_found")},
    )
    def payment(self, request, payment_id: str):
        wallet = caller_wallet(request)
        return Response(payment_attempt_out(payment_attempt_get(wallet=wallet, payment_id=payment_id)))


class GatewayWebhookViewSet(ApiViewSet):
    # The gateway authenticates by signature, not by a bearer token or a session (so CSRF,
    # which protects ambient session credentials, has nothing to protect here).
    authentication_classes = []
    permission_classes = [AllowAny]
    # Per client address: a gateway that outruns the rate gets 429 and retries later, as it
    # does for any failed delivery.
    throttle_classes = WEBHOOK_THROTTLES

    @extend_schema(
        operation_id="webhooks_gateway",
        summary="The payment gateway's signed webhook",
        description=(
            'Signed with `Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`; '
            "several v1 values are accepted (secret rotation). The signature is checked on the raw body before "
            "anything is parsed. Each event id is processed once; a payment is credited once, however many "
            "events report it."
        ),
        parameters=[signature_parameter(SIGNATURE_HEADER), RETRY_AFTER_HEADER],
        request=GatewayEventIn,
        auth=[],
        responses={
            200: GatewayWebhookOut,
            **problems(
                "invalid_signature", "validation_failed", "payment_not_found", "amount_mismatch", "rate_limited"
            ),
        },
    )
    def gateway(self, request):
        event = signed_event(
            request,
            header=SIGNATURE_HEADER,
            secret=settings.WALLET["GATEWAY_WEBHOOK_SECRET"],
            serializer_class=GatewayEventIn,
        )
        outcome = gateway_event_process(event=event)
        attempt = outcome.payment_attempt
        logger.info(
            "gateway event",
            extra={"event_id": event["id"], "event_type": event["type"], "result": outcome.result},
        )
        if outcome.error is not None:
            # The event and the review flag are committed; now answer the refusal.
            raise outcome.error
        return Response(
            {
                "received": True,
                "result": outcome.result,
                "payment_id": str(attempt.id) if attempt else None,
                "status": attempt.status if attempt else None,
            }
        )
