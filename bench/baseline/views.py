"""The baseline's one route, POST /api/v1/wallet/transfer (and its bcrypt-PIN twin), as a DRF
viewset action: the same body, Idempotency-Key, answers and error codes as the service."""

from __future__ import annotations

import hashlib
import json
import uuid

from django.db import IntegrityError, transaction
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from bench.baseline.models import IdempotencyKey, Wallet
from bench.baseline.serializers import HistoryItemSerializer, TransferSerializer
from bench.baseline.services import pin_check, transfer_post
from walletsite.errors import (
    PROBLEM_CONTENT_TYPE,
    ApiError,
    IdempotencyKeyInUse,
    IdempotencyKeyRequired,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    SameWallet,
    WalletNotFound,
    problem,
)


def _idempotency_key(request) -> str:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        raise IdempotencyKeyRequired()
    if not 1 <= len(key) <= 255 or not all(0x20 < ord(c) < 0x7F for c in key):
        raise InvalidIdempotencyKey()
    return key


def _fingerprint(data: dict) -> str:
    clean = {name: value for name, value in data.items() if name != "pin"}
    return hashlib.sha256(json.dumps(clean, sort_keys=True).encode()).hexdigest()


def _recipient(ref: str) -> Wallet:
    query = Wallet.objects.select_related("user").filter(is_system=False)
    wallet = None
    if "@" in ref:
        wallet = query.filter(handle=ref.strip().lower()).first()
    else:
        try:
            wallet = query.filter(id=uuid.UUID(ref)).first()
        except ValueError:
            wallet = None
    if wallet is None:
        raise WalletNotFound()
    return wallet


def _answer(status: int, body: dict, *, replayed: bool = False) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    content_type = PROBLEM_CONTENT_TYPE if status >= 400 else None
    return Response(body, status=status, headers=headers, content_type=content_type)


class WalletViewSet(viewsets.GenericViewSet):
    serializer_class = TransferSerializer
    pin_scheme = "hmac"

    @action(detail=False, methods=["post"])
    def transfer(self, request):
        key = _idempotency_key(request)
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        fingerprint = _fingerprint(data)

        stored = IdempotencyKey.objects.filter(user=request.user, key=key).first()
        if stored is not None:
            if stored.request_hash != fingerprint:
                raise IdempotencyKeyReused()
            return _answer(stored.response_status, stored.response_body, replayed=True)

        sender = Wallet.objects.get(user=request.user)
        pin_check(wallet=sender, pin=data["pin"], scheme=self.pin_scheme)

        def record(status: int, body: dict) -> None:
            IdempotencyKey.objects.create(
                user=request.user, key=key, request_hash=fingerprint, response_status=status, response_body=body
            )

        try:
            try:
                with transaction.atomic():
                    status, body = 201, self._transfer(sender=sender, data=data)
                    record(status, body)
            except ApiError as refusal:
                # A refusal is the request's answer too: a retry with the key replays it.
                status, body = refusal.status, problem(refusal.code, refusal.detail)
                record(status, body)
        except IntegrityError:
            # The unique (user, key): a concurrent request with this key got there first.
            raise IdempotencyKeyInUse() from None
        return _answer(status, body)

    def _transfer(self, *, sender: Wallet, data: dict) -> dict:
        recipient = _recipient(data["to"])
        if recipient.id == sender.id:
            raise SameWallet()
        debit, sender, _ = transfer_post(
            sender_id=sender.id, recipient_id=recipient.id, amount=data["amount"], note=data["note"]
        )
        item = HistoryItemSerializer(debit, context={"counterparty": recipient}).data
        return {"transaction": dict(item), "balance": sender.balance}


class BcryptPinWalletViewSet(WalletViewSet):
    """The same transfer with the PIN checked against a bcrypt hash (cost 12)."""

    pin_scheme = "bcrypt"
