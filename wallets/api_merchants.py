"""Merchant payments over the API: a customer pays a merchant (POST /wallet/pay), a merchant
refunds a payment (POST /merchant/payments/{transaction_id}/refund), and staff run cashback
campaigns (/admin/campaigns). The services are wallets.payments and wallets.cashback."""

from __future__ import annotations

from django.core import signing
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from wallets.api_admin import StaffWithPermission
from wallets.api_wallet import caller_wallet
from wallets.cashback import campaign_create, campaign_pause, campaign_resume
from wallets.models import CashbackCampaign
from wallets.money import money_response
from wallets.payments import payment_create, payment_refund, payment_response, refund_response
from wallets.serializers import HistoryItemOut
from walletsite.errors import Forbidden, InvalidCursor
from walletsite.schema import AUTHENTICATED, IDEMPOTENCY_HEADER, RETRY_AFTER_HEADER, problems
from walletsite.serializers import AmountField, PinField, StrictSerializer, StringField
from walletsite.throttles import PIN_THROTTLES
from walletsite.views import ApiViewSet


class PayIn(StrictSerializer):
    merchant = StringField(min_length=1, max_length=64, help_text="The merchant's wallet handle (name@wallet) or id")
    amount = AmountField(help_text="Minor units: a positive integer")
    pin = PinField(write_only=True)
    order_id = StringField(
        max_length=64, required=False, allow_blank=True, default="", help_text="The merchant's order reference"
    )


class CashbackOut(serializers.Serializer):
    amount = serializers.IntegerField(min_value=1)
    campaign_id = serializers.UUIDField()
    transaction_id = serializers.UUIDField(help_text="The cashback's own ledger transaction")


class PayOut(serializers.Serializer):
    transaction = HistoryItemOut(help_text="The customer's side of the payment")
    balance = serializers.IntegerField(help_text="The customer's posted balance after the payment and its cashback")
    payment_id = serializers.UUIDField()
    fee = serializers.IntegerField(help_text="The merchant's fee on this payment (paid by the merchant)")
    cashback = CashbackOut(required=False, help_text="Present when a cashback campaign credited the customer")


class RefundIn(StrictSerializer):
    amount = AmountField(required=False, help_text="Minor units; omitted: all that is left of the payment")
    reason = StringField(max_length=280, required=False, allow_blank=True, default="")


class PaymentSummaryOut(serializers.Serializer):
    id = serializers.UUIDField()
    transaction_id = serializers.UUIDField()
    amount = serializers.IntegerField()
    currency = serializers.CharField()
    fee = serializers.IntegerField()
    refunded_total = serializers.IntegerField(help_text="Every refund of this payment so far, this one included")
    refundable = serializers.IntegerField(help_text="What can still be refunded")
    fee_refunded = serializers.IntegerField(help_text="The part of the fee given back so far")
    order_id = serializers.CharField(allow_null=True)


class RefundOut(serializers.Serializer):
    refund_id = serializers.UUIDField()
    amount = serializers.IntegerField()
    fee_refunded = serializers.IntegerField(help_text="Given back from the fees account: the merchant pays the rest")
    cashback_reversed = serializers.IntegerField(help_text="Cashback taken back from the customer for this refund")
    reason = serializers.CharField(allow_blank=True)
    payment = PaymentSummaryOut()
    transaction = HistoryItemOut(
        allow_null=True, help_text="The merchant's side of the refund (null if the fees account paid all of it)"
    )
    balance = serializers.IntegerField(help_text="The merchant's posted balance after the refund")


TRANSACTION_ID = OpenApiParameter(
    "transaction_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="The payment's ledger transaction id"
)


class PaymentViewSet(ApiViewSet):
    @extend_schema(
        operation_id="wallet_pay",
        summary="Pay a merchant",
        description=(
            "Moves `amount` from the caller's wallet to the merchant's, less the merchant's fee (basis points, "
            "rounded down), which goes to the fees account: one ledger transaction. When a cashback campaign "
            "applies and its pool can pay, the cashback is credited as a second ledger transaction at once."
        ),
        parameters=[IDEMPOTENCY_HEADER, RETRY_AFTER_HEADER],
        request=PayIn,
        responses={
            201: PayOut,
            **problems(
                *AUTHENTICATED,
                "validation_failed",
                "idempotency_key_required",
                "invalid_idempotency_key",
                "forbidden",
                "invalid_pin",
                "merchant_not_found",
                "idempotency_key_in_use",
                "idempotency_key_reused",
                "insufficient_funds",
                "same_wallet",
                "currency_mismatch",
                "limit_exceeded",
                "wallet_frozen",
                "pin_locked",
                "rate_limited",
            ),
        },
    )
    @action(detail=False, methods=["post"], throttle_classes=PIN_THROTTLES)
    def pay(self, request):
        customer = caller_wallet(request)
        body = PayIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)
        pin = data.pop("pin")

        def operation() -> tuple[int, dict]:
            result = payment_create(
                customer=customer, merchant_ref=data["merchant"], amount=data["amount"], order_id=data["order_id"]
            )
            return 201, payment_response(result=result)

        return money_response(request, route="wallet.pay", data=data, operation=operation, pin=pin)


class MerchantViewSet(ApiViewSet):
    @extend_schema(
        operation_id="merchant_payment_refund",
        summary="Refund all or part of a payment to you",
        description=(
            "Merchant's token. The refunds of one payment never add up to more than it. The fee is given back "
            "in proportion from the fees account (all of it by the refund that completes the payment), the "
            "merchant pays the rest; cashback the payment earned is taken back in the same proportion. A retry "
            "with the same Idempotency-Key returns the first answer and moves nothing."
        ),
        parameters=[IDEMPOTENCY_HEADER, TRANSACTION_ID],
        request=RefundIn,
        responses={
            201: RefundOut,
            **problems(
                *AUTHENTICATED,
                "validation_failed",
                "idempotency_key_required",
                "invalid_idempotency_key",
                "forbidden",
                "transaction_not_found",
                "idempotency_key_in_use",
                "idempotency_key_reused",
                "insufficient_funds",
                "refund_exceeds_payment",
                "limit_exceeded",
                "wallet_frozen",
            ),
        },
    )
    def refund(self, request, transaction_id: str):
        merchant = caller_wallet(request)
        if request.user.role != "merchant":
            raise Forbidden("Only merchants refund payments")
        body = RefundIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = {"transaction_id": transaction_id, **body.validated_data}

        def operation() -> tuple[int, dict]:
            result = payment_refund(
                merchant=merchant, transaction_id=transaction_id, amount=data.get("amount"), reason=data["reason"]
            )
            return 201, refund_response(result=result)

        return money_response(request, route="merchant.refund", data=data, operation=operation)


class CampaignIn(StrictSerializer):
    name = StringField(min_length=1, max_length=120)
    bps = serializers.IntegerField(min_value=1, max_value=10_000, help_text="Basis points of each payment")
    cap_per_payment = AmountField(help_text="The most one payment earns, minor units")
    budget = serializers.IntegerField(min_value=1, max_value=2**53 - 1, help_text="The most the campaign grants")
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    merchant = StringField(
        max_length=64, required=False, allow_null=True, default=None, help_text="A merchant's wallet; omitted: all"
    )


class CampaignOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    bps = serializers.IntegerField()
    cap_per_payment = serializers.IntegerField()
    budget = serializers.IntegerField()
    spent = serializers.IntegerField(help_text="Cashback granted so far")
    remaining = serializers.IntegerField()
    starts_at = serializers.DateTimeField()
    ends_at = serializers.DateTimeField()
    merchant_wallet_id = serializers.UUIDField(allow_null=True)
    status = serializers.ChoiceField(choices=CashbackCampaign.Status.choices)
    created_at = serializers.DateTimeField()


class CampaignPageOut(serializers.Serializer):
    data = CampaignOut(many=True)
    has_more = serializers.BooleanField()
    next_cursor = serializers.CharField(allow_null=True)


class CampaignListQuery(StrictSerializer):
    limit = serializers.IntegerField(min_value=1, max_value=100, default=20)
    cursor = serializers.CharField(max_length=512, required=False)


class CampaignStatusIn(StrictSerializer):
    reason = StringField(max_length=1000, required=False, default="", help_text="Why; kept in the audit log")


CAMPAIGN_ID = OpenApiParameter("campaign_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="A campaign id")
_CURSOR_SALT = "wallets.campaigns.cursor.v1"


def _campaign(campaign: CashbackCampaign) -> dict:
    return CampaignOut(
        {
            "id": campaign.id,
            "name": campaign.name,
            "bps": campaign.bps,
            "cap_per_payment": campaign.cap_per_payment,
            "budget": campaign.budget,
            "spent": campaign.spent,
            "remaining": campaign.remaining,
            "starts_at": campaign.starts_at,
            "ends_at": campaign.ends_at,
            "merchant_wallet_id": campaign.merchant_wallet_id,
            "status": campaign.status,
            "created_at": campaign.created_at,
        }
    ).data


class CampaignAdminViewSet(ApiViewSet):
    """Admin token: a staff user with `wallets.manage_cashbackcampaign` creates and pauses
    campaigns; `wallets.view_cashbackcampaign` lists them."""

    permission_classes = [IsAuthenticated, StaffWithPermission]
    required_permissions = {
        "create": "wallets.manage_cashbackcampaign",
        "campaigns": "wallets.view_cashbackcampaign",
        "pause": "wallets.manage_cashbackcampaign",
        "resume": "wallets.manage_cashbackcampaign",
    }

    @extend_schema(
        operation_id="admin_campaign_create",
        summary="Create a cashback campaign",
        description="Active from starts_at to ends_at; its cashback comes from the cashback pool.",
        request=CampaignIn,
        responses={201: CampaignOut, **problems(*AUTHENTICATED, "validation_failed", "forbidden")},
    )
    def create(self, request):
        body = CampaignIn(data=request.data)
        body.is_valid(raise_exception=True)
        campaign = campaign_create(actor=request.user, **body.validated_data)
        campaign.refresh_from_db()
        return Response(_campaign(campaign), status=201)

    @extend_schema(
        operation_id="admin_campaign_list",
        summary="Cashback campaigns, newest first",
        parameters=[
            OpenApiParameter("limit", int, description="1-100, default 20"),
            OpenApiParameter("cursor", str, description="next_cursor of the previous page"),
        ],
        responses={
            200: CampaignPageOut,
            **problems(*AUTHENTICATED, "validation_failed", "invalid_cursor", "forbidden"),
        },
    )
    # Not named `list`: drf-spectacular would document a list action's answer as an array,
    # and this one answers a page.
    def campaigns(self, request):
        query = CampaignListQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        limit = query.validated_data["limit"]
        campaigns = CashbackCampaign.objects.order_by("-created_at", "-id")
        cursor = query.validated_data.get("cursor")
        if cursor:
            try:
                created_at, campaign_id = signing.loads(cursor, salt=_CURSOR_SALT)
                last = CashbackCampaign.objects.only("created_at").get(id=campaign_id, created_at=created_at)
            except (signing.BadSignature, ValueError, TypeError, CashbackCampaign.DoesNotExist):
                raise InvalidCursor("The cursor is not one this service issued") from None
            # Keyset on (created_at, id), the order of the campaign_recent index.
            campaigns = campaigns.filter(created_at__lte=last.created_at).exclude(
                created_at=last.created_at, id__gte=last.id
            )
        rows = list(campaigns[: limit + 1])
        has_more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = (
            signing.dumps([rows[-1].created_at.isoformat(), str(rows[-1].id)], salt=_CURSOR_SALT) if has_more else None
        )
        return Response({"data": [_campaign(c) for c in rows], "has_more": has_more, "next_cursor": next_cursor})

    @extend_schema(
        operation_id="admin_campaign_pause",
        summary="Pause a cashback campaign",
        description="Payments stop earning its cashback at once. Pausing a paused campaign changes nothing.",
        parameters=[CAMPAIGN_ID],
        request=CampaignStatusIn,
        responses={
            200: CampaignOut,
            **problems(*AUTHENTICATED, "validation_failed", "forbidden", "campaign_not_found"),
        },
    )
    def pause(self, request, campaign_id: str):
        return self._set_status(request, campaign_id, service=campaign_pause)

    @extend_schema(
        operation_id="admin_campaign_resume",
        summary="Resume a paused cashback campaign",
        parameters=[CAMPAIGN_ID],
        request=CampaignStatusIn,
        responses={
            200: CampaignOut,
            **problems(*AUTHENTICATED, "validation_failed", "forbidden", "campaign_not_found"),
        },
    )
    def resume(self, request, campaign_id: str):
        return self._set_status(request, campaign_id, service=campaign_resume)

    def _set_status(self, request, campaign_id: str, *, service) -> Response:
        body = CampaignStatusIn(data=request.data)
        body.is_valid(raise_exception=True)
        campaign = service(campaign_id=campaign_id, actor=request.user, reason=body.validated_data["reason"])
        return Response(_campaign(campaign))
