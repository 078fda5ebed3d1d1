"""The closed catalog of error codes and the one place that renders errors.

Services raise `ApiError` subclasses (each with a stable `code` and HTTP status, as Zulip's
`JsonableError`); `exception_handler` is DRF's EXCEPTION_HANDLER and the only code that turns
an exception into an HTTP error. Django's own 400/403/404/500 handlers render the same RFC 9457
`application/problem+json` body. `docs/errors.md` documents every code; a test keeps the two in
step.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response

logger = logging.getLogger("walletsite.errors")

PROBLEM_CONTENT_TYPE = "application/problem+json"

# code -> (HTTP status, fixed title). `detail` explains each occurrence.
CATALOG: dict[str, tuple[int, str]] = {
    "validation_failed": (400, "The request is not valid"),
    "idempotency_key_required": (400, "An Idempotency-Key header is required"),
    "invalid_idempotency_key": (400, "The Idempotency-Key header is not valid"),
    "invalid_signature": (400, "The webhook signature is not valid"),
    "invalid_cursor": (400, "The pagination cursor is not valid"),
    "authentication_required": (401, "Authentication is required"),
    "invalid_token": (401, "The access token is not valid"),
    "invalid_credentials": (401, "The email or password is wrong"),
    "invalid_refresh_token": (401, "The refresh token is not valid"),
    "forbidden": (403, "You may not do this"),
    "invalid_pin": (403, "The PIN is wrong"),
    "approval_by_maker": (403, "The maker of an adjustment cannot approve it"),
    "not_found": (404, "No such route"),
    "wallet_not_found": (404, "No such wallet"),
    "payment_not_found": (404, "No such payment"),
    "transaction_not_found": (404, "No such transaction"),
    "merchant_not_found": (404, "No such merchant"),
    "campaign_not_found": (404, "No such cashback campaign"),
    "withdrawal_not_found": (404, "No such withdrawal"),
    "webhook_endpoint_not_found": (404, "No such webhook endpoint"),
    "bank_account_not_found": (404, "No such bank account"),
    "adjustment_not_found": (404, "No such adjustment"),
    "method_not_allowed": (405, "The route does not take this method"),
    "not_acceptable": (406, "The service cannot answer in the requested format"),
    "email_taken": (409, "The email is already registered"),
    "bank_account_exists": (409, "The bank account is already registered"),
    "adjustment_not_pending": (409, "The adjustment is no longer pending approval"),
    "idempotency_key_in_use": (409, "A request with this Idempotency-Key is still running"),
    "payload_too_large": (413, "The request body is too large"),
    "unsupported_media_type": (415, "The request body must be JSON"),
    "idempotency_key_reused": (422, "The Idempotency-Key was used with a different request"),
    "insufficient_funds": (422, "Not enough available money"),
    "same_wallet": (422, "A wallet cannot send money to itself"),
    "refund_exceeds_payment": (422, "The refund exceeds what is left of the payment"),
    "limit_exceeded": (422, "The amount exceeds a limit"),
    "amount_mismatch": (422, "The amount or currency does not match the payment"),
    "currency_mismatch": (422, "The wallets hold different currencies"),
    "wallet_frozen": (423, "The wallet is frozen"),
    "pin_locked": (423, "Too many wrong PINs; PIN-authorized requests are locked"),
    "rate_limited": (429, "Too many requests; retry after the time in Retry-After"),
    "internal_error": (500, "Something went wrong on our side"),
    "service_unavailable": (503, "The service is temporarily unavailable"),
}


class ApiError(Exception):
    """A refusal with a stable code. Raise a subclass, or ApiError(code=...) directly."""

    code = "internal_error"

    def __init__(self, detail: str | None = None, *, code: str | None = None, **extra: Any) -> None:
        if code is not None:
            self.code = code
        if self.code not in CATALOG:
            raise ValueError(f"unknown error code {self.code!r}")
        self.detail = detail or CATALOG[self.code][1]
        self.extra = extra
        super().__init__(self.detail)

    @property
    def status(self) -> int:
        return CATALOG[self.code][0]

    def as_answer(self) -> ApiError:
        """This refusal, to keep as a result rather than raise: without its traceback, whose
        frames (the caller's, holding the list the answer goes into) would otherwise keep it
        and them alive in a reference cycle until the garbage collector runs."""
        return self.with_traceback(None)


def _error(code: str) -> type[ApiError]:
    return type("".join(part.title() for part in code.split("_")), (ApiError,), {"code": code})


ValidationFailed = _error("validation_failed")
IdempotencyKeyRequired = _error("idempotency_key_required")
InvalidIdempotencyKey = _error("invalid_idempotency_key")
InvalidSignature = _error("invalid_signature")
InvalidCursor = _error("invalid_cursor")
InvalidCredentials = _error("invalid_credentials")
InvalidRefreshToken = _error("invalid_refresh_token")
InvalidToken = _error("invalid_token")
Forbidden = _error("forbidden")
InvalidPin = _error("invalid_pin")
ApprovalByMaker = _error("approval_by_maker")
WalletNotFound = _error("wallet_not_found")
PaymentNotFound = _error("payment_not_found")
TransactionNotFound = _error("transaction_not_found")
MerchantNotFound = _error("merchant_not_found")
CampaignNotFound = _error("campaign_not_found")
RefundExceedsPayment = _error("refund_exceeds_payment")
EmailTaken = _error("email_taken")
WithdrawalNotFound = _error("withdrawal_not_found")
WebhookEndpointNotFound = _error("webhook_endpoint_not_found")
BankAccountNotFound = _error("bank_account_not_found")
AdjustmentNotFound = _error("adjustment_not_found")
BankAccountExists = _error("bank_account_exists")
AdjustmentNotPending = _error("adjustment_not_pending")
IdempotencyKeyInUse = _error("idempotency_key_in_use")
IdempotencyKeyReused = _error("idempotency_key_reused")
InsufficientFunds = _error("insufficient_funds")
SameWallet = _error("same_wallet")
LimitExceeded = _error("limit_exceeded")
AmountMismatch = _error("amount_mismatch")
CurrencyMismatch = _error("currency_mismatch")
WalletFrozen = _error("wallet_frozen")
PinLocked = _error("pin_locked")
ServiceUnavailable = _error("service_unavailable")


def problem(code: str, detail: str | None = None, **extra: Any) -> dict[str, Any]:
    status, title = CATALOG[code]
    body = {
        "type": f"urn:wallet:error:{code}",
        "title": title,
        "status": status,
        "detail": detail or title,
        "code": code,
    }
    body.update(extra)
    return body


def problem_response(code: str, detail: str | None = None, headers: dict | None = None, **extra: Any) -> Response:
    body = problem(code, detail, **extra)
    return Response(body, status=body["status"], content_type=PROBLEM_CONTENT_TYPE, headers=headers)


def _flatten(detail: Any, prefix: str = "") -> list[dict[str, str]]:
    """DRF's nested validation errors as a flat list of {field, message}."""
    if isinstance(detail, dict):
        out: list[dict[str, str]] = []
        for key, value in detail.items():
            name = key if key != "non_field_errors" else ""
            out += _flatten(value, f"{prefix}.{name}" if prefix and name else prefix or name)
        return out
    if isinstance(detail, list):
        out = []
        for item in detail:
            out += _flatten(item, prefix)
        return out
    return [{"field": prefix, "message": str(detail)}]


def _from_drf(exc: drf.APIException) -> tuple[str, str | None, dict[str, Any], dict[str, str]]:
    """(code, detail, extra body fields, headers) for one of DRF's own exceptions."""
    if isinstance(exc, drf.ValidationError):
        errors = _flatten(exc.detail)
        first = errors[0] if errors else {"field": "", "message": "invalid"}
        where = f"{first['field']}: " if first["field"] else ""
        return "validation_failed", f"{where}{first['message']}", {"errors": errors}, {}
    if isinstance(exc, drf.ParseError):
        return "validation_failed", "The body is not valid JSON", {}, {}
    if isinstance(exc, drf.NotAuthenticated):
        return "authentication_required", None, {}, {"WWW-Authenticate": 'Bearer realm="api"'}
    if isinstance(exc, drf.AuthenticationFailed):
        return "invalid_token", None, {}, {"WWW-Authenticate": 'Bearer realm="api", error="invalid_token"'}
    if isinstance(exc, drf.PermissionDenied):
        return "forbidden", None, {}, {}
    if isinstance(exc, drf.NotFound):
        return "not_found", None, {}, {}
    if isinstance(exc, drf.MethodNotAllowed):
        return "method_not_allowed", str(exc.detail), {}, {}
    if isinstance(exc, drf.NotAcceptable):
        return "not_acceptable", None, {}, {}
    if isinstance(exc, drf.UnsupportedMediaType):
        return "unsupported_media_type", None, {}, {}
    if isinstance(exc, drf.Throttled):
        wait = max(1, int(exc.wait or 1))
        return "rate_limited", None, {"retry_after": wait}, {"Retry-After": str(wait)}
    return "internal_error", None, {}, {}


def exception_handler(exc: Exception, context: dict) -> Response:
    """DRF's EXCEPTION_HANDLER: every error of every API view leaves through here."""
    if isinstance(exc, ApiError):
        headers = {}
        if "retry_after" in exc.extra:
            headers["Retry-After"] = str(exc.extra["retry_after"])
        return problem_response(exc.code, exc.detail, headers=headers, **exc.extra)
    if isinstance(exc, Http404):
        return problem_response("not_found")
    if isinstance(exc, PermissionDenied):
        return problem_response("forbidden")
    if isinstance(exc, RequestDataTooBig):
        return problem_response("payload_too_large")
    if isinstance(exc, drf.APIException):
        code, detail, extra, headers = _from_drf(exc)
        if code == "internal_error":
            logger.error("unmapped API exception", exc_info=exc)
        return problem_response(code, detail, headers=headers, **extra)
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.error("database unavailable", exc_info=exc)
        return problem_response("service_unavailable", headers={"Retry-After": "1"})
    if isinstance(exc, DatabaseError):
        logger.error("database error", exc_info=exc)
        return problem_response("internal_error")
    logger.error("unhandled exception", exc_info=exc)
    return problem_response("internal_error")


def _django_problem(code: str, **kw: Any) -> JsonResponse:
    body = problem(code, **kw)
    return JsonResponse(body, status=body["status"], content_type=PROBLEM_CONTENT_TYPE)


# Django's own handlers (urls.py handler400/403/404/500): the same shape outside DRF views.
def handler400(request, exception=None):
    if isinstance(exception, RequestDataTooBig):
        return _django_problem("payload_too_large")
    return _django_problem("validation_failed")


def handler403(request, exception=None):
    return _django_problem("forbidden")


def handler404(request, exception=None):
    return _django_problem("not_found")


def handler500(request):
    return _django_problem("internal_error")
