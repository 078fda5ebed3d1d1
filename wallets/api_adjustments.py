"""Staff money operations over the API (API.md "Staff money operations (maker-checker)"):
create an adjustment (maker), approve or reject it (a different checker), list and read them.

Admin token: a bearer access token of a staff user, with `wallets.make_adjustment` to create,
`wallets.approve_adjustment` to approve or reject, `wallets.view_adjustment` to read (the
"operations" group has all three, "support" only the last). Creating takes an
Idempotency-Key (wallets.money) and no PIN: staff have no wallet. Approving and rejecting are
idempotent by state instead: the first decision wins and any later one answers 409
adjustment_not_pending, so a retried approval can never post twice.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response

from wallets.adjustments import (
    SYSTEM_PARTIES,
    adjustment_approve,
    adjustment_create,
    adjustment_get,
    adjustment_list,
    adjustment_reject,
    party_label,
)
from wallets.api_admin import ReasonIn, StaffWithPermission
from wallets.models import Adjustment
from wallets.money import money_response
from walletsite.schema import AUTHENTICATED, IDEMPOTENCY_HEADER, problems
from walletsite.serializers import AmountField, StrictSerializer, StringField
from walletsite.views import ApiViewSet

PARTY_ONE_OF = " or ".join(SYSTEM_PARTIES)
PARTY_HELP = f"A wallet handle (name@wallet), a wallet id, or {PARTY_ONE_OF}"


class AdjustmentIn(StrictSerializer):
    amount = AmountField(help_text="Minor units: a positive integer")
    reason = StringField(min_length=1, max_length=1000, help_text="Why; mandatory, kept in the audit log")

    def get_fields(self):
        # `from` is a Python keyword, so both parties are declared here.
        fields = super().get_fields()
        fields["from"] = StringField(min_length=1, max_length=64, help_text=f"Where the money comes from: {PARTY_HELP}")
        fields["to"] = StringField(min_length=1, max_length=64, help_text=f"Where the money goes: {PARTY_HELP}")
        return fields

    def validate(self, attrs):
        # Refused here, before the idempotency record: a bad reference stores no answer.
        for field in ("from", "to"):
            ref = attrs[field].strip().lower()
            if ref.startswith("system:") and ref not in SYSTEM_PARTIES:
                raise serializers.ValidationError({field: f"Must be a wallet handle, a wallet id, or {PARTY_ONE_OF}"})
        return attrs

    def validate_reason(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("Must not be blank")
        return value.strip()


class ApproveIn(StrictSerializer):
    comment = StringField(
        max_length=1000, required=False, allow_blank=True, default="", help_text="Optional; kept in the audit log"
    )


class AdjustmentOut(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=Adjustment.Status.choices)
    amount = serializers.IntegerField(help_text="Minor units")
    currency = serializers.CharField()
    reason = serializers.CharField()
    created_by = serializers.EmailField(source="created_by.email", help_text="The maker")
    created_at = serializers.DateTimeField()
    decided_by = serializers.EmailField(
        source="decided_by.email", allow_null=True, help_text="The checker who approved or rejected it"
    )
    decided_at = serializers.DateTimeField(allow_null=True)
    decision_reason = serializers.CharField(help_text="Why it was rejected; empty otherwise")
    transaction_id = serializers.UUIDField(allow_null=True, help_text="The ledger transaction, once posted")

    def get_fields(self):
        # `from` is a Python keyword, so both parties are declared here.
        fields = super().get_fields()
        fields["from"] = serializers.SerializerMethodField(help_text="`system:<code>` or a wallet handle")
        fields["to"] = serializers.SerializerMethodField(help_text="`system:<code>` or a wallet handle")
        return fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_from(self, adjustment: Adjustment) -> str:
        return party_label(adjustment.from_account)

    @extend_schema_field(OpenApiTypes.STR)
    def get_to(self, adjustment: Adjustment) -> str:
        return party_label(adjustment.to_account)


class AdjustmentPageOut(serializers.Serializer):
    data = AdjustmentOut(many=True)
    has_more = serializers.BooleanField()
    next_cursor = serializers.CharField(allow_null=True)


class AdjustmentQuery(StrictSerializer):
    limit = serializers.IntegerField(min_value=1, max_value=100, default=20)
    cursor = serializers.CharField(max_length=512, required=False)
    status = serializers.ChoiceField(choices=Adjustment.Status.values, required=False)


ADJUSTMENT_ID = OpenApiParameter(
    "adjustment_id", OpenApiTypes.STR, OpenApiParameter.PATH, description="An adjustment id"
)


class AdjustmentViewSet(ApiViewSet):
    permission_classes = [IsAuthenticated, StaffWithPermission]
    required_permissions = {
        "make": "wallets.make_adjustment",
        "approve": "wallets.approve_adjustment",
        "reject": "wallets.approve_adjustment",
        "index": "wallets.view_adjustment",
        "show": "wallets.view_adjustment",
    }

    @extend_schema(
        operation_id="admin_adjustment_create",
        summary="Make an adjustment (maker): recorded pending approval, nothing moves yet",
        description=(
            "Moves `amount` from `from` to `to` once a different staff member approves it. Cashback-pool "
            "funding is `system:adjustments` -> `system:cashback_pool`. Needs make_adjustment; audited."
        ),
        parameters=[IDEMPOTENCY_HEADER],
        request=AdjustmentIn,
        responses={
            201: AdjustmentOut,
            **problems(
                *AUTHENTICATED,
                "validation_failed",
                "idempotency_key_required",
                "invalid_idempotency_key",
                "forbidden",
                "wallet_not_found",
                "idempotency_key_in_use",
                "idempotency_key_reused",
                "same_wallet",
                "currency_mismatch",
            ),
        },
    )
    def make(self, request):
        body = AdjustmentIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = dict(body.validated_data)

        def operation() -> tuple[int, dict]:
            adjustment = adjustment_create(
                maker=request.user,
                from_ref=data["from"],
                to_ref=data["to"],
                amount=data["amount"],
                reason=data["reason"],
            )
            return 201, AdjustmentOut(adjustment_get(adjustment_id=adjustment.id)).data

        return money_response(request, route="admin.adjustments.create", data=data, operation=operation)

    @extend_schema(
        operation_id="admin_adjustment_list",
        summary="Adjustments, newest first",
        parameters=[
            OpenApiParameter("limit", int, description="1-100, default 20"),
            OpenApiParameter("cursor", str, description="next_cursor of the previous page"),
            OpenApiParameter("status", str, enum=Adjustment.Status.values, description="Only this status"),
        ],
        responses={
            200: AdjustmentPageOut,
            **problems(*AUTHENTICATED, "validation_failed", "invalid_cursor", "forbidden"),
        },
    )
    def index(self, request):
        query = AdjustmentQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        page = adjustment_list(
            status=query.validated_data.get("status"),
            limit=query.validated_data["limit"],
            cursor=query.validated_data.get("cursor"),
        )
        return Response(
            {
                "data": AdjustmentOut(page.adjustments, many=True).data,
                "has_more": page.has_more,
                "next_cursor": page.next_cursor,
            }
        )

    @extend_schema(
        operation_id="admin_adjustment_retrieve",
        summary="One adjustment",
        parameters=[ADJUSTMENT_ID],
        responses={200: AdjustmentOut, **problems(*AUTHENTICATED, "forbidden", "adjustment_not_found")},
    )
    def show(self, request, adjustment_id: str):
        return Response(AdjustmentOut(adjustment_get(adjustment_id=adjustment_id)).data)

    @extend_schema(
        operation_id="admin_adjustment_approve",
        summary="Approve an adjustment (checker): posts it",
        description=(
            "By a staff member other than its maker, with approve_adjustment; audited. Approving twice posts "
            "once. When the ledger refuses the movement (insufficient_funds) the adjustment stays pending."
        ),
        parameters=[ADJUSTMENT_ID],
        request=ApproveIn,
        responses={
            200: AdjustmentOut,
            **problems(
                *AUTHENTICATED,
                "validation_failed",
                "forbidden",
                "approval_by_maker",
                "adjustment_not_found",
                "adjustment_not_pending",
                "insufficient_funds",
                "currency_mismatch",
                "limit_exceeded",
            ),
        },
    )
    def approve(self, request, adjustment_id: str):
        body = ApproveIn(data=request.data)
        body.is_valid(raise_exception=True)
        adjustment = adjustment_approve(
            adjustment_id=adjustment_id, checker=request.user, comment=body.validated_data["comment"]
        )
        return Response(AdjustmentOut(adjustment_get(adjustment_id=adjustment.id)).data)

    @extend_schema(
        operation_id="admin_adjustment_reject",
        summary="Reject an adjustment: nothing moves",
        description="With approve_adjustment (the maker may withdraw their own this way); audited with the reason.",
        parameters=[ADJUSTMENT_ID],
        request=ReasonIn,
        responses={
            200: AdjustmentOut,
            **problems(
                *AUTHENTICATED, "validation_failed", "forbidden", "adjustment_not_found", "adjustment_not_pending"
            ),
        },
    )
    def reject(self, request, adjustment_id: str):
        body = ReasonIn(data=request.data)
        body.is_valid(raise_exception=True)
        adjustment = adjustment_reject(
            adjustment_id=adjustment_id, checker=request.user, reason=body.validated_data["reason"]
        )
        return Response(AdjustmentOut(adjustment_get(adjustment_id=adjustment.id)).data)
