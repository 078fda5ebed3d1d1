"""The one path every money-moving API request takes: Idempotency-Key, replay, PIN, then
the operation exactly once (wallets.idempotency)."""

from __future__ import annotations

from collections.abc import Callable

from rest_framework.response import Response

from wallets.idempotency import (
    HEADER,
    REPLAYED_HEADER,
    IdempotentRequest,
    Outcome,
    idempotency_key_from_header,
    idempotent_execute,
    idempotent_replay,
    request_fingerprint,
)
from walletsite.errors import PROBLEM_CONTENT_TYPE


def idempotent_request(request, *, route: str, data: dict) -> IdempotentRequest:
    key = idempotency_key_from_header(request.headers.get(HEADER))
    return IdempotentRequest(
        user_id=request.user.id,
        key=key,
        fingerprint=request_fingerprint(method=request.method, route=route, body=data),
    )


def money_response(
    request,
    *,
    route: str,
    data: dict,
    operation: Callable[[], tuple[int, dict]],
    pin: str | None = None,
) -> Response:
    """Answer a money-moving request. Order: key (400 if missing), replay of a completed
    request (no PIN needed, no guess spent), PIN check (its failures are not stored: the
    client may retry the same key with the right PIN), then the operation, once."""
    from accounts.pin import pin_verify

    idem = idempotent_request(request, route=route, data=data)
    outcome = idempotent_replay(request=idem)
    if outcome is None:
        if pin is not None:
            pin_verify(user=request.user, pin=pin)
        outcome = idempotent_execute(request=idem, operation=operation)
    return render_outcome(outcome)


def render_outcome(outcome: Outcome) -> Response:
    headers = {REPLAYED_HEADER: "true"} if outcome.replayed else {}
    content_type = PROBLEM_CONTENT_TYPE if outcome.status >= 400 else None
    return Response(outcome.body, status=outcome.status, headers=headers, content_type=content_type)
