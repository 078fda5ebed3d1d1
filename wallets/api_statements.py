"""GET /wallet/statements/{YYYY-MM}: the caller's statement for one UTC calendar month, as
JSON or (`?format=csv`) a CSV download. Both are streamed (wallets.statements)."""

from __future__ import annotations

from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from wallets.api_wallet import caller_wallet
from wallets.serializers import HistoryItemOut
from wallets.statements import statement_csv, statement_json, statement_month_parse, wallet_statement
from walletsite.schema import AUTHENTICATED, problems
from walletsite.serializers import StrictSerializer
from walletsite.views import ApiViewSet


class StatementQuery(StrictSerializer):
    format = serializers.ChoiceField(choices=["json", "csv"], default="json")


class StatementOut(serializers.Serializer):
    month = serializers.CharField(help_text="YYYY-MM (UTC)")
    currency = serializers.CharField()
    opening_balance = serializers.IntegerField(help_text="balance_after of the last entry before the month; 0 if none")
    closing_balance = serializers.IntegerField(help_text="opening_balance plus the signed amounts of the entries")
    entries = HistoryItemOut(many=True, help_text="Every entry of the month, oldest first")


class StatementViewSet(ApiViewSet):
    def perform_content_negotiation(self, request, force=False):
        # `format` is this route's own query parameter (json or csv), read by StatementQuery;
        # DRF would otherwise take it as a renderer name. Errors are always problem+json.
        renderer = JSONRenderer()
        return renderer, renderer.media_type

    @extend_schema(
        operation_id="wallet_statement",
        parameters=[
            OpenApiParameter("month", str, OpenApiParameter.PATH, description="YYYY-MM, not in the future"),
            OpenApiParameter("format", str, enum=["json", "csv"], description="csv: a text/csv download"),
        ],
        responses={
            (200, "application/json"): StatementOut,
            (200, "text/csv"): OpenApiResponse(
                response=OpenApiTypes.STR,
                description="Header row, an opening_balance row, one row per entry, a closing_balance row",
            ),
            **problems(*AUTHENTICATED, "validation_failed", "forbidden"),
        },
    )
    def retrieve(self, request, month: str):
        wallet = caller_wallet(request)
        query = StatementQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        statement = wallet_statement(wallet=wallet, month=statement_month_parse(month=month))
        if query.validated_data["format"] == "csv":
            response = StreamingHttpResponse(statement_csv(statement=statement), content_type="text/csv; charset=utf-8")
            filename = f"statement-{wallet.handle.split('@')[0]}-{statement.month}.csv"
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
            return response
        return StreamingHttpResponse(statement_json(statement=statement), content_type="application/json")
