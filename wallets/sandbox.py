"""The sandbox payment gateway: a stand-in for the outside gateway, on by default outside
production (GATEWAY_SANDBOX). With it off, walletsite/urls.py does not route here at all.

- GET /sandbox/checkout/{payment_id}: the checkout page add-money's checkout_url points to,
  with a button to make the payment succeed and one to make it fail.
- POST /sandbox/payments/{payment_id}/complete {"outcome": "succeeded"|"failed"}: plays the
  gateway. It builds the event a gateway would send (a new event id each time), signs it
  with the gateway webhook secret and delivers it over real HTTP to this service's own
  PUBLIC_URL/api/v1/webhooks/gateway, exactly as a real gateway would, then answers with
  what the webhook answered. It never touches the ledger itself.

CSRF: the complete endpoint is exempt, for the JSON callers (scripts, tests: an outside
system with no session) and for the checkout page's form alike. CSRF protects requests that
ride on a browser's ambient credentials; this endpoint uses none (no session, no token), and
anyone may complete any sandbox payment by design, so a token would protect nothing. The
endpoint takes only `outcome`: a form field it does not know (a CSRF token included) is
refused, like any unknown field.
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.shortcuts import render
from django.urls import path
from django.views.decorators.http import require_GET
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.parsers import FormParser, JSONParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from wallets.gateway import Delivery, delivery_breaker, webhook_deliver
from wallets.models import PaymentAttempt
from wallets.topups import EVENT_FAILED, EVENT_SUCCEEDED
from walletsite.errors import PaymentNotFound, ServiceUnavailable
from walletsite.schema import problems
from walletsite.serializers import StrictSerializer

logger = logging.getLogger("wallets.sandbox")

OUTCOMES = {"succeeded": EVENT_SUCCEEDED, "failed": EVENT_FAILED}
# The page is self-contained: inline styles, one form back to this service, nothing else.
PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"


def _attempt(payment_id) -> PaymentAttempt:
    try:
        attempt_id = uuid.UUID(str(payment_id))
    except ValueError:
        attempt_id = None
    attempt = PaymentAttempt.objects.filter(id=attempt_id).first() if attempt_id else None
    if attempt is None:
        raise PaymentNotFound("No payment attempt has this id")
    return attempt


def sandbox_event(*, attempt: PaymentAttempt, outcome: str) -> dict:
    """The event a gateway sends when a checkout ends. The gateway reference names the
    charge of this checkout, so completing it again looks like a redelivery under a new
    event id (credited once), not like a second charge."""
    return {
        "id": f"evt_sandbox_{uuid.uuid4().hex}",
        "type": OUTCOMES[outcome],
        "data": {
            "payment_id": str(attempt.id),
            "amount": attempt.amount,
            "currency": attempt.currency,
            "gateway_reference": f"sandbox_ch_{attempt.id.hex}",
        },
    }


def sandbox_payment_complete(*, payment_id, outcome: str) -> tuple[dict, Delivery]:
    """End the checkout of `payment_id` with `outcome` and deliver the signed webhook; the
    event sent and what the webhook answered. 404 for an unknown payment, 503 when the
    webhook cannot be reached."""
    event = sandbox_event(attempt=_attempt(payment_id), outcome=outcome)
    url = f"{settings.WALLET['PUBLIC_URL']}/api/v1/webhooks/gateway"
    try:
        delivery = webhook_deliver(
            url=url,
            event=event,
            secret=settings.WALLET["GATEWAY_WEBHOOK_SECRET"],
            breaker=delivery_breaker(name="gateway_webhook"),
        )
    except OSError as exc:
        logger.warning("sandbox webhook delivery failed", extra={"url": url, "error": str(exc)})
        raise ServiceUnavailable("The sandbox gateway could not reach the webhook at PUBLIC_URL") from None
    logger.info(
        "sandbox webhook delivered",
        extra={"payment_id": str(payment_id), "event_id": event["id"], "webhook_status": delivery.status},
    )
    return event, delivery


def _major(amount: int) -> str:
    """Minor units as a decimal string (two places), without floating point."""
    return f"{amount // 100:,}.{amount % 100:02d}"


@require_GET
def checkout_page(request, payment_id: str):
    try:
        attempt = _attempt(payment_id)
    except PaymentNotFound:
        response = render(request, "sandbox/not_found.html", {"payment_id": payment_id}, status=404)
    else:
        context = {"attempt": attempt, "amount_major": _major(attempt.amount), "pending": attempt.status == "pending"}
        response = render(request, "sandbox/checkout.html", context)
    response["Content-Security-Policy"] = PAGE_POLICY
    response["Cache-Control"] = "no-store"
    return response


class CompleteIn(StrictSerializer):
    """How the sandbox checkout ends."""

    outcome = serializers.ChoiceField(choices=sorted(OUTCOMES), help_text="How the checkout ends")


class WebhookAnswerOut(serializers.Serializer):
    status = serializers.IntegerField(help_text="The HTTP status the webhook answered")
    body = serializers.JSONField(help_text="The webhook's body (JSON)")


class CompleteOut(serializers.Serializer):
    """The event the sandbox gateway delivered and what the webhook answered."""

    payment_id = serializers.UUIDField()
    outcome = serializers.ChoiceField(choices=sorted(OUTCOMES))
    event = serializers.JSONField(help_text="The event delivered: {id, type, data}")
    webhook = WebhookAnswerOut()


class SandboxCompleteView(APIView):
    # An outside system: no bearer token, no session (and so no CSRF; see the module doc).
    authentication_classes = []
    permission_classes = [AllowAny]
    parser_classes = [JSONParser, FormParser]

    @extend_schema(
        operation_id="sandbox_payment_complete",
        summary="Sandbox gateway: end a checkout and deliver its signed webhook",
        description=(
            "Plays the payment gateway: signs a payment.succeeded or payment.failed event for the attempt and "
            "POSTs it over HTTP to /api/v1/webhooks/gateway, then answers with the webhook's status and body. "
            "A form post (from the checkout page) gets an HTML page instead. Only when GATEWAY_SANDBOX is on."
        ),
        tags=["sandbox"],
        parameters=[OpenApiParameter("payment_id", OpenApiTypes.STR, OpenApiParameter.PATH)],
        request=CompleteIn,
        auth=[],
        responses={200: CompleteOut, **problems("validation_failed", "payment_not_found", "unsupported_media_type")},
    )
    def post(self, request, payment_id: str):
        body = CompleteIn(data=request.data.dict() if hasattr(request.data, "dict") else request.data)
        body.is_valid(raise_exception=True)
        outcome = body.validated_data["outcome"]
        event, delivery = sandbox_payment_complete(payment_id=payment_id, outcome=outcome)
        answer = {
            "payment_id": str(payment_id),
            "outcome": outcome,
            "event": event,
            "webhook": {"status": delivery.status, "body": delivery.body},
        }
        if request.content_type.startswith("application/x-www-form-urlencoded"):
            response = render(request._request, "sandbox/result.html", answer)
            response["Content-Security-Policy"] = PAGE_POLICY
            return response
        return Response(answer)


urlpatterns = [
    path("checkout/<str:payment_id>", checkout_page, name="sandbox-checkout"),
    path("payments/<str:payment_id>/complete", SandboxCompleteView.as_view(), name="sandbox-payment-complete"),
]
