"""The wallet API: the caller's wallet, balance, P2P transfers and history."""

from __future__ import annotations

import re
import uuid

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.decorators import action
from rest_framework.response import Response

from accounts.authentication import ClaimsTokenAuthentication
from ledger.batcher import BatchTimeout, CommitOutcomeUnknown
from ledger.models import Transaction
from ledger.selectors import HistoryFilter
from wallets.history import login_history, wallet_history, wallet_transaction
from wallets.models import Wallet
from wallets.money import idempotent_request, render_outcome
from wallets.serializers import BalanceOut, HistoryItemOut, HistoryPageOut, WalletOut
from wallets.transfers import TRANSFERS, TransferRequest
from walletsite.errors import ApiError, Forbidden, ServiceUnavailable, TransactionNotFound
from walletsite.schema import AUTHENTICATED, IDEMPOTENCY_HEADER, RETRY_AFTER_HEADER, problems
from walletsite.serializers import AmountField, PinField, StrictSerializer, StringField
from walletsite.throttles import PIN_THROTTLES
from walletsite.views import ApiViewSet


def caller_wallet_of(user) -> Wallet:
    """The user's wallet; staff users have none (403 forbidden)."""
    try:
        wallet = user.wallet
    except Wallet.DoesNotExist:
        raise Forbidden("This user has no wallet") from None
    return wallet


def caller_wallet(request) -> Wallet:
    """The authenticated user's wallet; staff users have none (403 forbidden)."""
    return caller_wallet_of(request.user)


class TransferIn(StrictSerializer):
    to = StringField(min_length=1, max_length=64, help_text="Wallet handle (name@wallet) or wallet id")
    amount = AmountField(help_text="Minor units: a positive integer")
    pin = PinField(write_only=True)
    note = StringField(max_length=280, required=False, allow_blank=True, default="")


def _clean_string(value, *, max_length: int, allow_blank: bool) -> str | None:
    """What StringField(trim_whitespace, the null and surrogate validators) makes of a valid
    value, or None when the field would refuse it."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value:
        return "" if allow_blank else None
    if len(value) > max_length or "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        return None
    return value


_PIN = re.compile(r"[0-9]{4,6}")
_TRANSFER_FIELDS = frozenset(TransferIn._declared_fields)


def transfer_body(data) -> dict | None:
    """The validated transfer body TransferIn would give, computed directly, for a body
    TransferIn accepts; None for any other, which TransferIn then refuses with its exact
    answer. The transfer is the one hot write route, and DRF's serializer (a deep copy of
    its fields per request) is about a sixth of its request-side work.
    `test_transfer_body_agrees_with_the_serializer` holds the two to the same decisions."""
    if type(data) is not dict or not {"to", "amount", "pin"} <= data.keys() <= _TRANSFER_FIELDS:
        return None
    amount = data["amount"]
    if type(amount) is not int or not 0 < amount <= settings.WALLET["MAX_TRANSACTION_AMOUNT"]:
        return None
    to = _clean_string(data["to"], max_length=64, allow_blank=False)
    pin = _clean_string(data["pin"], max_length=2**31, allow_blank=False)
    note = _clean_string(data.get("note", ""), max_length=280, allow_blank=True)
    if to is None or pin is None or note is None or not _PIN.fullmatch(pin):
        return None
    return {"to": to, "amount": amount, "pin": pin, "note": note}


def validated(data, *, direct, serializer: type[serializers.Serializer]) -> dict:
    """`direct(data)` (a hot route's check that answers for the common valid input and gives
    None for anything else), else what `serializer` validates, or its exact 400."""
    checked = direct(data)
    if checked is None:
        body = serializer(data=data)
        body.is_valid(raise_exception=True)
        checked = dict(body.validated_data)
    return checked


class TransferOut(serializers.Serializer):
    transaction = HistoryItemOut()
    balance = serializers.IntegerField(help_text="The sender's posted balance after the transfer")


HISTORY_TYPES = tuple(Transaction.Type.values)


class HistoryQuery(StrictSerializer):
    limit = serializers.IntegerField(min_value=1, max_value=100, default=20)
    cursor = serializers.CharField(max_length=512, required=False)
    type = serializers.CharField(
        required=False, help_text=f"One or more of {', '.join(HISTORY_TYPES)}, comma-separated"
    )
    direction = serializers.ChoiceField(choices=["credit", "debit"], required=False)
    # `from` is a Python keyword; the serializer field is renamed below.
    to = serializers.DateTimeField(required=False, help_text="Only entries created before this time (RFC 3339)")

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = serializers.DateTimeField(
            required=False, help_text="Only entries created at or after this time (RFC 3339)"
        )
        return fields

    def validate_type(self, value: str) -> tuple[str, ...]:
        types = tuple(t.strip() for t in value.split(",") if t.strip())
        unknown = [t for t in types if t not in HISTORY_TYPES]
        if not types or unknown:
            raise serializers.ValidationError(f"Must be one or more of {', '.join(HISTORY_TYPES)}")
        return types

    def validate(self, attrs):
        start, end = attrs.get("from"), attrs.get("to")
        if start and end and start >= end:
            raise serializers.ValidationError({"from": "Must be before `to`"})
        return attrs


_LIMIT = re.compile(r"[1-9][0-9]?|100")
_CURSOR = re.compile(r"[A-Za-z0-9_:.-]{1,512}")


def history_query(params: dict) -> dict | None:
    """HistoryQuery's validated data for the common query, `limit` and/or `cursor` and
    nothing else, each in the form the service itself writes (a plain 1-100; a cursor's
    characters, which signing never pads or spaces); None for anything else, which
    HistoryQuery then decides with its exact answer. The serializer (a deep copy of its
    fields per request) was a fifth of a page's own Python time.
    `test_history_query_agrees_with_the_serializer_where_it_answers` holds them to it."""
    if not params.keys() <= {"limit", "cursor"}:
        return None
    limit, cursor = params.get("limit", "20"), params.get("cursor")
    if not _LIMIT.fullmatch(limit) or (cursor is not None and not _CURSOR.fullmatch(cursor)):
        return None
    return {"limit": int(limit)} if cursor is None else {"limit": int(limit), "cursor": cursor}


HISTORY_PARAMETERS = [
    OpenApiParameter("limit", int, description="1-100, default 20"),
    OpenApiParameter("cursor", str, description="next_cursor of the previous page"),
    OpenApiParameter("type", str, description="Filter by type, comma-separated"),
    OpenApiParameter("direction", str, enum=["credit", "debit"]),
    OpenApiParameter("from", str, description="RFC 3339 timestamp, inclusive"),
    OpenApiParameter("to", str, description="RFC 3339 timestamp, exclusive"),
]


def history_response(request) -> Response:
    """A history page. The routes authenticate from the token's claims (a ClaimsUser) and the
    page's one statement checks the login (wallets.history.login_history). Anything refused
    before that, or a login or wallet the statement did not find, answers as on the routes
    that authenticate up front: an ended login 401, a user without a wallet 403, then the
    refusal itself."""
    user = request.user
    try:
        q = validated(request.query_params.dict(), direct=history_query, serializer=HistoryQuery)
        page_of = {
            "limit": q["limit"],
            "cursor": q.get("cursor"),
            "filters": HistoryFilter(
                types=q.get("type", ()),
                direction=q.get("direction"),
                created_from=q.get("from"),
                created_to=q.get("to"),
            ),
        }
        page = login_history(user_id=user.id, family_id=user.family_id, **page_of)
    except Exception:
        caller_wallet_of(user.verify())
        raise
    if page is None:
        # The full check raises 401 or 403; if it finds both after all (a wallet made
        # meanwhile), the page is read for that wallet.
        page = wallet_history(wallet=caller_wallet_of(user.verify()), **page_of)
    return Response(page.as_dict())


class WalletViewSet(ApiViewSet):
    @extend_schema(operation_id="wallet_get", responses={200: WalletOut, **problems(*AUTHENTICATED, "forbidden")})
    def retrieve(self, request):
        return Response(WalletOut(caller_wallet(request)).data)

    @extend_schema(operation_id="wallet_balance", responses={200: BalanceOut, **problems(*AUTHENTICATED, "forbidden")})
    def balance(self, request):
        return Response(BalanceOut(caller_wallet(request)).data)

    @extend_schema(
        operation_id="wallet_transfer",
        parameters=[IDEMPOTENCY_HEADER, RETRY_AFTER_HEADER],
        request=TransferIn,
        responses={
            201: TransferOut,
            **problems(
                *AUTHENTICATED,
                "validation_failed",
                "idempotency_key_required",
                "invalid_idempotency_key",
                "forbidden",
                "invalid_pin",
                "wallet_not_found",
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
    @action(
        detail=False,
        methods=["post"],
        throttle_classes=PIN_THROTTLES,
        authentication_classes=[ClaimsTokenAuthentication],
    )
    def transfer(self, request):
        # Authenticated from the token's claims: the login, the wallet, the key, the PIN and
        # the money are all checked in the batch's one transaction (wallets.transfers).
        try:
            data = validated(request.data, direct=transfer_body, serializer=TransferIn)
            pin = data.pop("pin")
            idem = idempotent_request(request, route="wallet.transfer", data=data)
        except Exception:
            # Refused before the batch: an ended login (401) and a user without a wallet
            # (403) answer first, as on the routes that load the user up front.
            caller_wallet_of(request.user.verify())
            raise
        command = TransferRequest(
            idempotency=idem,
            family_id=request.user.family_id,
            to=data["to"],
            amount=data["amount"],
            note=data["note"],
            pin=pin,
        )
        try:
            answer = TRANSFERS.submit(command)
        except (CommitOutcomeUnknown, BatchTimeout):
            # The transfer may or may not have happened: a retry with the same key finds out.
            raise ServiceUnavailable(
                "The transfer's outcome is not known yet; retry with the same Idempotency-Key", retry_after=1
            ) from None
        if isinstance(answer, ApiError):
            try:
                raise answer
            finally:
                del answer  # else this frame and the error's traceback hold each other
        return render_outcome(answer)

    @extend_schema(
        operation_id="wallet_transactions",
        parameters=HISTORY_PARAMETERS,
        responses={200: HistoryPageOut, **problems(*AUTHENTICATED, "validation_failed", "invalid_cursor", "forbidden")},
    )
    @action(detail=False, methods=["get"], authentication_classes=[ClaimsTokenAuthentication])
    def transactions(self, request):
        return history_response(request)


class TransactionViewSet(ApiViewSet):
    @extend_schema(
        operation_id="transactions_list",
        parameters=HISTORY_PARAMETERS,
        responses={200: HistoryPageOut, **problems(*AUTHENTICATED, "validation_failed", "invalid_cursor", "forbidden")},
    )
    @action(detail=False, methods=["get"], authentication_classes=[ClaimsTokenAuthentication])
    def history(self, request):
        return history_response(request)

    @extend_schema(
        operation_id="transactions_get",
        responses={200: HistoryItemOut, **problems(*AUTHENTICATED, "forbidden", "transaction_not_found")},
    )
    def retrieve(self, request, transaction_id: str):
        wallet = caller_wallet(request)
        try:
            txn_id = uuid.UUID(transaction_id)
        except ValueError:
            raise TransactionNotFound("No transaction with this id has you as a party") from None
        return Response(wallet_transaction(wallet=wallet, transaction_id=txn_id))
