"""The sandbox bank: a stand-in for the outside bank, routed only in sandbox mode
(GATEWAY_SANDBOX; walletsite/urls.py). It keeps its own state (`SandboxPayout`, one row per
payout reference) and talks to the service over real HTTP only, as a bank would.

The payout API the bank client (wallets.bank) calls, under /sandbox/bank:
- POST payouts {reference, amount, currency, account_number, ifsc, holder_name}: 201 for a
  new reference, 200 with the existing payout for a known one (dedup by reference; each
  call counts in `submissions`, so tests can see the bank was asked once).
- GET payouts/{reference}: the payout, or 404.
- POST payouts/{reference}/cancel: a processing payout becomes cancelled; a settled one keeps
  its status. Either way the answer is the payout (200): its status says which happened.

How a new payout is settled depends on SANDBOX_BANK_MODE: `manual` waits for
POST /sandbox/payouts/{withdrawal_id}/complete {"outcome": "succeeded"|"failed"};
`succeed` and `fail` settle at once and deliver the callback before answering the
submission (so the callback can arrive before the service recorded the submission, as with
a real bank); `never` accepts the payout and never settles it (recovery cancels it after
WITHDRAWAL_TIMEOUT_SECONDS).

A callback is `{"id": "bevt_...", "type": "payout.succeeded"|"payout.failed", "data":
{"reference", "amount", "currency", "reason"?}}`, signed with BANK_WEBHOOK_SECRET in a
`Bank-Signature` header and POSTed to PUBLIC_URL/api/v1/webhooks/bank. The sandbox never
stores a full account number (only its last four digits) and never touches the ledger.
"""

from __future__ import annotations

import contextlib
import logging
import uuid

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.db.models.functions import Now
from django.urls import path
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from wallets.gateway import Delivery, delivery_breaker, webhook_deliver
from wallets.models import SandboxPayout
from walletsite.errors import ServiceUnavailable, ValidationFailed, WithdrawalNotFound
from walletsite.schema import problems
from walletsite.serializers import StrictSerializer, StringField

logger = logging.getLogger("wallets.sandbox_bank")

SIGNATURE_HEADER = "Bank-Signature"
EVENT_SUCCEEDED = "payout.succeeded"
EVENT_FAILED = "payout.failed"
OUTCOMES = {"succeeded": EVENT_SUCCEEDED, "failed": EVENT_FAILED}
FAILURE_REASON = "the beneficiary bank rejected the credit (sandbox)"

Status = SandboxPayout.Status


def sandbox_payout_out(payout: SandboxPayout) -> dict:
    return {
        "reference": payout.reference,
        "status": payout.status,
        "amount": payout.amount,
        "currency": payout.currency,
        "submissions": payout.submissions,
    }


def sandbox_payout_receive(
    *, reference: str, amount: int, currency: str, account_number: str, ifsc: str
) -> tuple[SandboxPayout, bool]:
    """Record a payout request; (payout, created). A known reference is not paid again: its
    submission count goes up and the existing payout is answered."""
    with transaction.atomic():
        try:
            with transaction.atomic():
                payout = SandboxPayout.objects.create(
                    reference=reference, amount=amount, currency=currency, account_last4=account_number[-4:], ifsc=ifsc
                )
            return payout, True
        except IntegrityError:
            SandboxPayout.objects.filter(reference=reference).update(submissions=F("submissions") + 1, updated_at=Now())
            return SandboxPayout.objects.get(reference=reference), False


def sandbox_payout_get(*, reference: str) -> SandboxPayout:
    payout = SandboxPayout.objects.filter(reference=reference).first()
    if payout is None:
        raise WithdrawalNotFound("The sandbox bank has no payout with this reference")
    return payout


def sandbox_payout_cancel(*, reference: str) -> tuple[SandboxPayout, bool]:
    """Cancel a processing payout; (payout, cancelled now)."""
    changed = SandboxPayout.objects.filter(reference=reference, status=Status.PROCESSING).update(
        status=Status.CANCELLED, updated_at=Now()
    )
    return sandbox_payout_get(reference=reference), bool(changed)


def sandbox_payout_settle(*, reference: str, outcome: str) -> SandboxPayout:
    """Settle a processing payout with `outcome`; a settled payout keeps its first outcome
    (the bank pays or rejects once). A cancelled payout cannot be settled (422)."""
    SandboxPayout.objects.filter(reference=reference, status=Status.PROCESSING).update(status=outcome, updated_at=Now())
    payout = sandbox_payout_get(reference=reference)
    if payout.status == Status.CANCELLED:
        raise ValidationFailed("The payout was cancelled; the sandbox bank will not settle it")
    return payout


def sandbox_bank_event(payout: SandboxPayout) -> dict:
    """The callback for a settled payout, under a new event id each time."""
    data = {"reference": payout.reference, "amount": payout.amount, "currency": payout.currency}
    if payout.status == Status.FAILED:
        data["reason"] = FAILURE_REASON
    event_type = EVENT_SUCCEEDED if payout.status == Status.SUCCEEDED else EVENT_FAILED
    return {"id": f"bevt_sandbox_{uuid.uuid4().hex}", "type": event_type, "data": data}


def sandbox_bank_callback(*, event: dict) -> Delivery:
    """POST a signed bank callback to this service over HTTP; 503 when it is unreachable."""
    url = f"{settings.WALLET['PUBLIC_URL']}/api/v1/webhooks/bank"
    try:
        delivery = webhook_deliver(
            url=url,
            event=event,
            secret=settings.WALLET["BANK_WEBHOOK_SECRET"],
            header_name=SIGNATURE_HEADER,
            breaker=delivery_breaker(name="bank_callback"),
        )
    except OSError as exc:
        logger.warning("sandbox bank callback failed", extra={"url": url, "error": str(exc)})
        raise ServiceUnavailable("The sandbox bank could not reach the callback at PUBLIC_URL") from None
    logger.info(
        "sandbox bank callback delivered",
        extra={"reference": event["data"]["reference"], "event_id": event["id"], "webhook_status": delivery.status},
    )
    return delivery


def sandbox_payout_complete(*, reference: str, outcome: str) -> tuple[dict, Delivery]:
    """Settle the payout (if still processing) and deliver its callback; a settled payout's
    callback is delivered again (a redelivery under a new event id)."""
    payout = sandbox_payout_settle(reference=reference, outcome=outcome)
    event = sandbox_bank_event(payout)
    return event, sandbox_bank_callback(event=event)


# --- the bank's payout API ---------------------------------------------------------------


class PayoutIn(StrictSerializer):
    reference = StringField(max_length=255)
    amount = serializers.IntegerField(min_value=1)
    currency = serializers.RegexField(r"^[A-Z]{3}\Z")
    account_number = serializers.RegexField(r"^[0-9]{9,18}\Z")
    ifsc = serializers.RegexField(r"^[A-Z]{4}0[A-Z0-9]{6}\Z")
    holder_name = StringField(max_length=140)


class PayoutOut(serializers.Serializer):
    reference = serializers.CharField()
    status = serializers.ChoiceField(choices=Status.choices)
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    submissions = serializers.IntegerField(help_text="How many times this reference was submitted")


class _SandboxView(APIView):
    # An outside system: no bearer token, no session, and so no CSRF to protect.
    authentication_classes = []
    permission_classes = [AllowAny]


REFERENCE = OpenApiParameter("reference", OpenApiTypes.STR, OpenApiParameter.PATH)


class PayoutsView(_SandboxView):
    @extend_schema(
        operation_id="sandbox_bank_payout_submit",
        summary="Sandbox bank: receive a payout (deduplicated by reference)",
        tags=["sandbox"],
        request=PayoutIn,
        auth=[],
        responses={200: PayoutOut, 201: PayoutOut, **problems("validation_failed")},
    )
    def post(self, request):
        body = PayoutIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        payout, created = sandbox_payout_receive(
            reference=data["reference"],
            amount=data["amount"],
            currency=data["currency"],
            account_number=data["account_number"],
            ifsc=data["ifsc"],
        )
        mode = settings.WALLET["SANDBOX_BANK_MODE"]
        if created and mode in ("succeed", "fail"):
            outcome = "succeeded" if mode == "succeed" else "failed"
            payout = sandbox_payout_settle(reference=payout.reference, outcome=outcome)
            # The payout is settled whether or not the callback gets through; the service's
            # recovery asks for the status.
            with contextlib.suppress(ServiceUnavailable):
                sandbox_bank_callback(event=sandbox_bank_event(payout))
        return Response(sandbox_payout_out(payout), status=201 if created else 200)


class PayoutView(_SandboxView):
    @extend_schema(
        operation_id="sandbox_bank_payout_get",
        summary="Sandbox bank: a payout's status",
        tags=["sandbox"],
        parameters=[REFERENCE],
        auth=[],
        responses={200: PayoutOut, **problems("withdrawal_not_found")},
    )
    def get(self, request, reference: str):
        return Response(sandbox_payout_out(sandbox_payout_get(reference=reference)))


class PayoutCancelView(_SandboxView):
    @extend_schema(
        operation_id="sandbox_bank_payout_cancel",
        summary="Sandbox bank: cancel a processing payout",
        tags=["sandbox"],
        parameters=[REFERENCE],
        request=None,
        auth=[],
        responses={200: PayoutOut, **problems("withdrawal_not_found")},
    )
    def post(self, request, reference: str):
        payout, _ = sandbox_payout_cancel(reference=reference)
        return Response(sandbox_payout_out(payout))


class PayoutCompleteIn(StrictSerializer):
    """How the sandbox bank settles the payout."""

    outcome = serializers.ChoiceField(choices=sorted(OUTCOMES), help_text="succeeded (paid) or failed (rejected)")


class CallbackAnswerOut(serializers.Serializer):
    status = serializers.IntegerField(help_text="The HTTP status the callback answered")
    body = serializers.JSONField(help_text="The callback's body (JSON)")


class PayoutCompleteOut(serializers.Serializer):
    withdrawal_id = serializers.CharField()
    outcome = serializers.ChoiceField(choices=sorted(OUTCOMES), help_text="The payout's settled outcome")
    event = serializers.JSONField(help_text="The callback delivered: {id, type, data}")
    webhook = CallbackAnswerOut()


class PayoutCompleteView(_SandboxView):
    @extend_schema(
        operation_id="sandbox_payout_complete",
        summary="Sandbox bank: settle a payout and deliver its signed callback",
        description=(
            "Plays the bank: settles the payout of this withdrawal (a settled payout keeps its first outcome) and "
            "POSTs a signed payout.succeeded or payout.failed callback over HTTP to /api/v1/webhooks/bank, then "
            "answers with the callback's status and body. Only when GATEWAY_SANDBOX is on."
        ),
        tags=["sandbox"],
        parameters=[OpenApiParameter("withdrawal_id", OpenApiTypes.STR, OpenApiParameter.PATH)],
        request=PayoutCompleteIn,
        auth=[],
        responses={200: PayoutCompleteOut, **problems("validation_failed", "withdrawal_not_found")},
    )
    def post(self, request, withdrawal_id: str):
        body = PayoutCompleteIn(data=request.data)
        body.is_valid(raise_exception=True)
        event, delivery = sandbox_payout_complete(reference=withdrawal_id, outcome=body.validated_data["outcome"])
        outcome = "succeeded" if event["type"] == EVENT_SUCCEEDED else "failed"
        return Response(
            {
                "withdrawal_id": withdrawal_id,
                "outcome": outcome,
                "event": event,
                "webhook": {"status": delivery.status, "body": delivery.body},
            }
        )


urlpatterns = [
    path("bank/payouts", PayoutsView.as_view(), name="sandbox-bank-payouts"),
    path("bank/payouts/<str:reference>", PayoutView.as_view(), name="sandbox-bank-payout"),
    path("bank/payouts/<str:reference>/cancel", PayoutCancelView.as_view(), name="sandbox-bank-payout-cancel"),
    path("payouts/<str:withdrawal_id>/complete", PayoutCompleteView.as_view(), name="sandbox-payout-complete"),
]
