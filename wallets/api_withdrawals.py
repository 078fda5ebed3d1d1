"""Money out: bank accounts, withdrawals, and the bank's signed callback."""

from __future__ import annotations

import logging

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from wallets.api_topups import GatewayAmountField
from wallets.api_wallet import caller_wallet
from wallets.gateway import signature_parameter, signed_event
from wallets.money import money_response
from wallets.sandbox_bank import SIGNATURE_HEADER
from wallets.withdrawals import (
    EVENT_TYPES,
    PUBLIC_STATUSES,
    bank_account_create,
    bank_account_out,
    bank_accounts_list,
    bank_event_process,
    withdrawal_create,
    withdrawal_get,
    withdrawal_out,
)
from walletsite.schema import AUTHENTICATED, IDEMPOTENCY_HEADER, RETRY_AFTER_HEADER, problems
from walletsite.serializers import AmountField, PinField, StrictSerializer, StringField
from walletsite.throttles import PIN_THROTTLES, WEBHOOK_THROTTLES
from walletsite.views import ApiViewSet

logger = logging.getLogger("wallets.api_withdrawals")


class BankAccountIn(StrictSerializer):
    """A payout destination. The account number is write-only: it is never answered."""

    account_number = serializers.RegexField(
        r"^[0-9]{9,18}\Z",
        write_only=True,
        error_messages={"invalid": "Must be 9 to 18 digits"},
        help_text="9-18 digits; only its last 4 digits are ever shown",
    )
    ifsc = serializers.RegexField(
        r"^[A-Z]{4}0[A-Z0-9]{6}\Z",
        error_messages={"invalid": "Must be an IFSC: 4 letters, 0, then 6 letters or digits (e.g. HDFC0001234)"},
        help_text="Indian Financial System Code: 4 letters, 0, 6 letters or digits (e.g. HDFC0001234)",
    )
    holder_name = StringField(min_length=1, max_length=140, help_text="The name on the account")

    def to_internal_value(self, data):
        # A number sent as a JSON number would lose leading zeros: strings only.
        if isinstance(data, dict) and "account_number" in data and not isinstance(data["account_number"], str):
            raise serializers.ValidationError({"account_number": ["Must be a string of 9 to 18 digits"]})
        return super().to_internal_value(data)


class BankAccountOut(serializers.Serializer):
    id = serializers.UUIDField()
    last4 = serializers.CharField(help_text="The last 4 digits of the account number")
    ifsc = serializers.CharField()
    holder_name = serializers.CharField()
    created_at = serializers.DateTimeField()


class BankAccountListOut(serializers.Serializer):
    data = BankAccountOut(many=True)


class WithdrawIn(StrictSerializer):
    amount = AmountField(help_text="Minor units to withdraw")
    pin = PinField(write_only=True)
    bank_account = StringField(max_length=64, help_text="The id of one of your bank accounts")


class WithdrawOut(serializers.Serializer):
    withdrawal_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=PUBLIC_STATUSES, help_text="Always pending: the bank has not answered yet")
    amount = serializers.IntegerField()


class WithdrawalOut(serializers.Serializer):
    withdrawal_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=PUBLIC_STATUSES)
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    bank_account = BankAccountOut()
    transaction_id = serializers.UUIDField(allow_null=True, help_text="The ledger transaction, once succeeded")
    failure_reason = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    settled_at = serializers.DateTimeField(allow_null=True)


class WithdrawalViewSet(ApiViewSet):
    @extend_schema(
        operation_id="wallet_bank_accounts_list",
        summary="Your bank accounts (payout destinations)",
        responses={200: BankAccountListOut, **problems(*AUTHENTICATED, "forbidden")},
    )
    def bank_accounts(self, request):
        wallet = caller_wallet(request)
        return Response({"data": [bank_account_out(b) for b in bank_accounts_list(wallet=wallet)]})

    @extend_schema(
        operation_id="wallet_bank_account_create",
        summary="Register a bank account to withdraw to",
        request=BankAccountIn,
        responses={
            201: BankAccountOut,
            **problems(*AUTHENTICATED, "validation_failed", "forbidden", "bank_account_exists"),
        },
    )
    def bank_account_create(self, request):
        wallet = caller_wallet(request)
        body = BankAccountIn(data=request.data)
        body.is_valid(raise_exception=True)
        account = bank_account_create(wallet=wallet, **body.validated_data)
        return Response(bank_account_out(account), status=201)

    @extend_schema(
        operation_id="wallet_withdraw",
        summary="Withdraw to a bank account",
        description=(
            "Holds the amount at once (held_balance rises, balance does not) and answers 202; the worker then sends "
            "the payout to the bank. When the bank confirms, the hold is posted (type withdrawal); when it rejects "
            "or the payout times out, the hold is released."
        ),
        parameters=[IDEMPOTENCY_HEADER, RETRY_AFTER_HEADER],
        request=WithdrawIn,
        responses={
            202: WithdrawOut,
            **problems(
                *AUTHENTICATED,
                "validation_failed",
                "idempotency_key_required",
                "invalid_idempotency_key",
                "forbidden",
                "invalid_pin",
                "bank_account_not_found",
                "idempotency_key_in_use",
                "idempotency_key_reused",
                "insufficient_funds",
                "limit_exceeded",
                "wallet_frozen",
                "pin_locked",
                "rate_limited",
            ),
        },
    )
    @action(detail=False, methods=["post"], throttle_classes=PIN_THROTTLES)
    def withdraw(self, request):
        wallet = caller_wallet(request)
        body = WithdrawIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        pin = data.pop("pin")

        def operation() -> tuple[int, dict]:
            withdrawal = withdrawal_create(wallet=wallet, bank_account_id=data["bank_account"], amount=data["amount"])
            return 202, {"withdrawal_id": str(withdrawal.id), "status": "pending", "amount": withdrawal.amount}

        return money_response(request, route="wallet.withdraw", data=data, operation=operation, pin=pin)

    @extend_schema(
        operation_id="wallet_withdrawal_get",
        summary="A withdrawal (pending, succeeded or failed)",
        parameters=[OpenApiParameter("withdrawal_id", OpenApiTypes.STR, OpenApiParameter.PATH)],
        responses={200: WithdrawalOut, **problems(*AUTHENTICATED, "forbidden", "withdrawal_not_found")},
    )
    def withdrawal(self, request, withdrawal_id: str):
        wallet = caller_wallet(request)
        return Response(withdrawal_out(withdrawal_get(wallet=wallet, withdrawal_id=withdrawal_id)))


class BankEventDataIn(StrictSerializer):
    reference = StringField(max_length=255, help_text="The payout reference: the withdrawal id")
    amount = GatewayAmountField(help_text="Minor units the bank paid or rejected")
    currency = serializers.RegexField(r"^[A-Z]{3}\Z", required=False, help_text="ISO 4217")
    reason = StringField(max_length=500, required=False, allow_blank=True, help_text="Why the bank rejected it")


class BankEventIn(StrictSerializer):
    id = StringField(max_length=255, help_text="The event id; a redelivery carries the same one")
    type = serializers.ChoiceField(choices=EVENT_TYPES)
    data = BankEventDataIn()


class BankWebhookOut(serializers.Serializer):
    received = serializers.BooleanField()
    result = serializers.ChoiceField(
        choices=["posted", "released", "already_settled", "flagged", "duplicate"],
        help_text=(
            "posted: the hold was posted now; released: the hold was released now; already_settled: the withdrawal "
            "was settled the same way before, nothing changed; flagged: the event contradicts how the withdrawal was "
            "settled, nothing moved and it is flagged for review; duplicate: this event id was processed before"
        ),
    )
    withdrawal_id = serializers.UUIDField(allow_null=True)
    status = serializers.ChoiceField(choices=PUBLIC_STATUSES, allow_null=True)


class BankWebhookViewSet(ApiViewSet):
    # The bank authenticates by signature, not by a token or a session.
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = WEBHOOK_THROTTLES

    @extend_schema(
        operation_id="webhooks_bank",
        summary="The bank's signed payout callback",
        description=(
            'Signed like the gateway webhook, in `Bank-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.'
            '<raw body>")>` with the bank webhook secret, checked on the raw body. Each event id is processed once; '
            "a withdrawal is posted or released once, however many events report it."
        ),
        parameters=[signature_parameter(SIGNATURE_HEADER), RETRY_AFTER_HEADER],
        request=BankEventIn,
        auth=[],
        responses={
            200: BankWebhookOut,
            **problems(
                "invalid_signature", "validation_failed", "withdrawal_not_found", "amount_mismatch", "rate_limited"
            ),
        },
    )
    def bank(self, request):
        event = signed_event(
            request,
            header=SIGNATURE_HEADER,
            secret=settings.WALLET["BANK_WEBHOOK_SECRET"],
            serializer_class=BankEventIn,
        )
        outcome = bank_event_process(event=event)
        logger.info(
            "bank event", extra={"event_id": event["id"], "event_type": event["type"], "result": outcome.result}
        )
        if outcome.error is not None:
            raise outcome.error
        withdrawal = outcome.withdrawal
        return Response(
            {
                "received": True,
                "result": outcome.result,
                "withdrawal_id": str(withdrawal.id) if withdrawal else None,
                "status": withdrawal.public_status if withdrawal else None,
            }
        )
