"""Idempotency-Key for every request that moves money (API.md "Idempotency").

The key row is inserted in the same database transaction as the money movement, so either
both commit or neither does: a crash between them cannot move money without recording the
key, nor record a key for money that never moved.

Concurrency: the first thing that transaction does is take a transaction-scoped advisory
lock on (user, key) with `pg_try_advisory_xact_lock`. A second request with the same key
while the first runs does not get the lock and answers 409 idempotency_key_in_use at once,
instead of queueing behind it (as Zulip's `nowait` row locks do). The lock is released by the
same COMMIT that makes the key row visible, so whoever gets the lock next sees the stored
answer and replays it.

What is stored: the answer of a request that reached the money operation, success or
refusal (insufficient_funds, wallet_not_found, ...), as Stripe does. Requests refused before
that (bad body, bad PIN, a locked PIN, a missing key) store nothing, so the client can fix the
request and retry with the same key. The PIN is never part of the fingerprint or the stored
answer.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import transaction

from ledger.posting import atomic, with_retries
from walletsite.db import Query, pipelined
from walletsite.errors import (
    ApiError,
    IdempotencyKeyInUse,
    IdempotencyKeyRequired,
    IdempotencyKeyReused,
    InvalidIdempotencyKey,
    problem,
)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Never part of the fingerprint: a retry after a mistyped PIN is the same request.
SECRET_FIELDS = frozenset({"pin"})


@dataclass(frozen=True)
class IdempotentRequest:
    user_id: Any
    key: str
    fingerprint: str


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict
    replayed: bool


def idempotency_key_from_header(value: str | None) -> str:
    """The key as sent; 400 when missing, empty, too long or not printable ASCII."""
    if value is None:
        raise IdempotencyKeyRequired("Send an Idempotency-Key header with every request that moves money")
    if not 1 <= len(value) <= 255 or not all(0x20 < ord(c) < 0x7F for c in value):
        raise InvalidIdempotencyKey("The Idempotency-Key must be 1-255 printable ASCII characters without spaces")
    return value


def request_fingerprint(*, method: str, route: str, body: dict) -> str:
    """SHA-256 of the request as the service understood it (validated fields, PIN left out)."""
    clean = {name: value for name, value in body.items() if name not in SECRET_FIELDS}
    canonical = json.dumps([method.upper(), route, clean], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _replay(*, request: IdempotentRequest, stored: dict) -> Outcome | None:
    row = stored.get((request.user_id, request.key))
    return None if row is None else idempotency_outcome(request=request, row=row)


def idempotent_replay(*, request: IdempotentRequest) -> Outcome | None:
    """The stored answer for this key, if its request completed; 422 if the key was used
    for a different request. Called before the PIN check, so a replay needs no PIN and
    costs no guess."""
    (stored,) = pipelined(idempotency_stored_query(requests=[request]))
    return _replay(request=request, stored=stored)


def _advisory_key(request: IdempotentRequest) -> int:
    digest = hashlib.sha256(f"idempotency:{request.user_id}:{request.key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def idempotent_execute(*, request: IdempotentRequest, operation: Callable[[], tuple[int, dict]]) -> Outcome:
    """Run `operation` (which moves money inside the current transaction and returns the
    status and body to answer) exactly once for this key, and store its answer with it."""

    def attempt() -> Outcome:
        with atomic():
            # The lock, then (a later statement) the stored answer: one round trip.
            (locked,), stored = pipelined(
                idempotency_lock_query(requests=[request]), idempotency_stored_query(requests=[request])
            )
            if not locked:
                raise IdempotencyKeyInUse("A request with this Idempotency-Key is still running; retry shortly")
            replay = _replay(request=request, stored=stored)
            if replay is not None:
                return replay
            try:
                # A savepoint: a refused operation leaves nothing behind but its answer.
                with transaction.atomic():
                    status, body = operation()
            except ApiError as refusal:
                status, body = refusal.status, problem(refusal.code, refusal.detail, **refusal.extra)
            outcome = Outcome(status, body, replayed=False)
            pipelined(idempotency_record_query(answered=[(request, outcome)]))
            return outcome

    return with_retries(attempt)


# -- the statements, for one request or many (the transfer batcher) ---------------------
#
# Each statement as a Query, so that a caller sends it with its others in one round trip
# (walletsite.db.pipelined).


@dataclass(frozen=True)
class StoredAnswer:
    """A key's stored row: the fingerprint of its request and the answer to replay."""

    request_hash: str
    status: int
    body: dict


def idempotency_lock_query(*, requests: Sequence[IdempotentRequest]) -> Query[list[bool]]:
    """Try the advisory lock of each request's key inside the current transaction, in one
    statement; False where another transaction holds it (409 idempotency_key_in_use). Read
    the stored answers afterwards, in a later statement (idempotency_stored_query), so that
    they include whatever the lock's previous holder committed."""
    return Query(
        "SELECT pg_try_advisory_xact_lock(k) FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(k, i) ORDER BY i",
        [[_advisory_key(request) for request in requests]],
        read=lambda rows: [locked for (locked,) in rows],
    )


def idempotency_stored_query(*, requests: Sequence[IdempotentRequest]) -> Query[dict[tuple[Any, str], StoredAnswer]]:
    """The stored answers of these requests' keys, by (user id, key), in one statement."""
    return Query(
        "SELECT k.user_id, k.key, k.request_hash, k.response_status, k.response_body"
        " FROM unnest(%s::uuid[], %s::text[]) AS c(user_id, key)"
        " JOIN wallets_idempotencykey AS k ON k.user_id = c.user_id AND k.key = c.key",
        [[request.user_id for request in requests], [request.key for request in requests]],
        # jsonb arrives as text (Django's loaders leave JSON to the model field).
        read=lambda rows: {
            (user_id, key): StoredAnswer(request_hash, status, json.loads(body))
            for user_id, key, request_hash, status, body in rows
        },
    )


def idempotency_outcome(*, request: IdempotentRequest, row: StoredAnswer) -> Outcome:
    """The replay of a stored answer; 422 if the key was used for a different request."""
    if row.request_hash != request.fingerprint:
        raise IdempotencyKeyReused("This Idempotency-Key was used with a different request")
    return Outcome(row.status, row.body, replayed=True)


def idempotency_record_query(*, answered: Sequence[tuple[IdempotentRequest, Outcome]]) -> Query[list]:
    """Store the answers of requests that reached their money operation, in one INSERT."""
    return Query(
        "INSERT INTO wallets_idempotencykey"
        " (user_id, key, request_hash, response_status, response_body, created_at)"
        " SELECT u.user_id, u.key, u.hash, u.status, u.body::jsonb, statement_timestamp()"
        " FROM unnest(%s::uuid[], %s::text[], %s::text[], %s::int[], %s::text[])"
        " AS u(user_id, key, hash, status, body)",
        [
            [request.user_id for request, _ in answered],
            [request.key for request, _ in answered],
            [request.fingerprint for request, _ in answered],
            [outcome.status for _, outcome in answered],
            [json.dumps(outcome.body) for _, outcome in answered],
        ],
    )
