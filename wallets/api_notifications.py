"""Merchant webhook endpoints (API.md "Notifications to merchants"): register, list, delete.

The secret is in the 201 answer of the registration only; lists never show it, so a leaked
merchant token can read where events go but cannot forge them.
"""

from __future__ import annotations

from datetime import datetime

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from wallets.api_wallet import caller_wallet
from wallets.models import Wallet
from wallets.notifications import webhook_endpoint_create, webhook_endpoint_delete, webhook_endpoints_of
from walletsite.errors import Forbidden
from walletsite.schema import AUTHENTICATED, problems
from walletsite.serializers import StrictSerializer, StringField
from walletsite.views import ApiViewSet


def caller_merchant_wallet(request) -> Wallet:
    """The wallet of the authenticated merchant; a customer (or staff) gets 403 forbidden."""
    wallet = caller_wallet(request)
    if request.user.role != "merchant":
        raise Forbidden("Only merchants have webhook endpoints")
    return wallet


class WebhookEndpointIn(StrictSerializer):
    url = StringField(max_length=2000, help_text="Where events are POSTed: http(s)://... (https only in production)")


class WebhookEndpointOut(serializers.Serializer):
    id = serializers.UUIDField()
    url = serializers.CharField()
    created_at = serializers.DateTimeField()


class WebhookEndpointCreatedOut(WebhookEndpointOut):
    secret = serializers.CharField(help_text="The signing secret of Wallet-Signature; shown once, in this answer only")


class WebhookEndpointListOut(serializers.Serializer):
    data = WebhookEndpointOut(many=True)


class MerchantWebhookViewSet(ApiViewSet):
    @extend_schema(
        operation_id="merchant_webhook_endpoint_create",
        request=WebhookEndpointIn,
        responses={201: WebhookEndpointCreatedOut, **problems(*AUTHENTICATED, "validation_failed", "forbidden")},
    )
    def create(self, request):
        wallet = caller_merchant_wallet(request)
        body = WebhookEndpointIn(data=request.data)
        body.is_valid(raise_exception=True)
        endpoint, secret = webhook_endpoint_create(wallet=wallet, url=body.validated_data["url"])
        out = WebhookEndpointCreatedOut(
            {"id": endpoint.id, "url": endpoint.url, "created_at": _created(endpoint), "secret": secret}
        )
        return Response(out.data, status=status.HTTP_201_CREATED)

    @extend_schema(
        operation_id="merchant_webhook_endpoint_list",
        responses={200: WebhookEndpointListOut, **problems(*AUTHENTICATED, "forbidden")},
    )
    # Not named `list`: drf-spectacular would document a list action as a bare array.
    def index(self, request):
        wallet = caller_merchant_wallet(request)
        return Response(WebhookEndpointListOut({"data": webhook_endpoints_of(wallet=wallet)}).data)

    @extend_schema(
        operation_id="merchant_webhook_endpoint_delete",
        request=None,
        responses={204: None, **problems(*AUTHENTICATED, "forbidden", "webhook_endpoint_not_found")},
    )
    def destroy(self, request, endpoint_id: str):
        wallet = caller_merchant_wallet(request)
        webhook_endpoint_delete(wallet=wallet, endpoint_id=endpoint_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _created(endpoint) -> datetime:
    # created_at is a database default: unless the insert returned it, read it back.
    if not isinstance(endpoint.created_at, datetime):
        endpoint.refresh_from_db(fields=["created_at"])
    return endpoint.created_at
