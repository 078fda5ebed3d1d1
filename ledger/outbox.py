"""The transactional outbox: events recorded in the same database transaction as the change
they announce, and delivered at least once by the worker (`manage.py run_worker`).

An event can never announce a change that rolled back, nor be lost for one that committed,
because the row commits or rolls back with the change. Delivery is at least once: a worker
that crashes after delivering but before marking the event delivered delivers it again after
its lease expires, so every consumer deduplicates by event id.

Workers claim events with `FOR UPDATE SKIP LOCKED`, so any number of them share the queue and
no two claim the same event; a claim is a lease (leased_until) that another worker may take
over once it expires, which is how the events of a crashed worker get delivered. Times come
from the database's clock, the one clock every worker shares: statement_timestamp(), which
is also what Django's Now() is on PostgreSQL (now() would be the start of the transaction).
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import F
from django.db.models.functions import Now

from ledger.models import OutboxEvent
from walletsite.db import Query

# Retries back off exponentially from this, up to the maximum, so a consumer that is down
# for an hour is retried about once a minute at first and then hourly, never in a tight loop.
RETRY_BASE_SECONDS = 5
RETRY_MAX_SECONDS = 3600
MAX_ERROR_LENGTH = 2000

_TABLE = OutboxEvent._meta.db_table

# The inner SELECT picks the oldest available events that nobody holds (SKIP LOCKED: rows
# another worker is claiming at this moment are passed over, not waited for), the UPDATE
# leases them; both in one statement, committed at once.
_CLAIM_SQL = f"""
UPDATE {_TABLE}
   SET leased_until = statement_timestamp() + make_interval(secs => %s),
       attempts = attempts + 1
 WHERE id IN (
       SELECT id
         FROM {_TABLE}
        WHERE delivered_at IS NULL
          AND available_at <= statement_timestamp()
          AND (leased_until IS NULL OR leased_until < statement_timestamp())
        ORDER BY id
        LIMIT %s
          FOR UPDATE SKIP LOCKED)
RETURNING id, type, payload, created_at, available_at, leased_until, attempts, delivered_at, last_error
"""  # noqa: S608 - the table name is our model's, the values are parameters


def outbox_emit(*, type: str, payload: dict[str, Any]) -> OutboxEvent:
    """Record an event. Call it inside the atomic block of the change it announces, so that
    both commit or neither does; outside one it refuses, since an event committed on its own
    could announce a change that then rolls back."""
    _emittable(type)
    return OutboxEvent.objects.create(type=type, payload=payload)


def _emittable(type: str) -> None:
    if not connection.in_atomic_block:
        raise RuntimeError("outbox_emit must be called inside the transaction of the change it announces")
    if not type or len(type) > OutboxEvent._meta.get_field("type").max_length:
        raise ValueError(f"bad event type {type!r}")


def outbox_emit_query(*, events: list[tuple[str, dict[str, Any]]]) -> Query[list]:
    """The INSERT that records many (type, payload) events at once, under outbox_emit's
    rules, for a caller that runs it with its other statements (walletsite.db.pipelined)."""
    for type, _ in events:
        _emittable(type)
    return Query(
        f"INSERT INTO {_TABLE} (type, payload, created_at, available_at, attempts, last_error) "  # noqa: S608
        "SELECT u.type, u.payload::jsonb, statement_timestamp(), statement_timestamp(), 0, '' "
        "FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS u(type, payload, n) ORDER BY u.n",
        [[type for type, _ in events], [json.dumps(payload) for _, payload in events]],
    )


def outbox_claim(*, limit: int, lease_seconds: float) -> list[OutboxEvent]:
    """Lease up to `limit` deliverable events (oldest first) for `lease_seconds`, counting an
    attempt for each, and commit at once so that other workers see the lease."""
    if limit < 1 or lease_seconds <= 0:
        raise ValueError("limit and lease_seconds must be positive")
    with transaction.atomic(durable=True):
        events = list(OutboxEvent.objects.raw(_CLAIM_SQL, [float(lease_seconds), int(limit)]))
    # RETURNING comes in no particular order.
    return sorted(events, key=lambda event: event.id)


def outbox_mark_delivered(*, event_ids: list[int]) -> int:
    """The events reached every consumer: one statement for a whole batch. Returns how many
    were marked; one marked delivered already is not counted (a second worker took it over
    after the lease expired and finished first)."""
    if not event_ids:
        return 0
    return OutboxEvent.objects.filter(id__in=event_ids, delivered_at__isnull=True).update(
        delivered_at=Now(), leased_until=None, last_error=""
    )


def outbox_retry_delay(*, attempts: int) -> timedelta:
    """How long to wait after the `attempts`-th failed delivery: 5 s, 10 s, 20 s, ... up to
    an hour."""
    exponent = min(max(attempts - 1, 0), 20)
    return timedelta(seconds=min(RETRY_BASE_SECONDS * 2**exponent, RETRY_MAX_SECONDS))


def outbox_mark_failed(*, event_id: int, error: str, retry_in: timedelta) -> None:
    """A delivery failed: release the lease and offer the event again after `retry_in`."""
    OutboxEvent.objects.filter(id=event_id, delivered_at__isnull=True).update(
        available_at=Now() + retry_in,
        leased_until=None,
        last_error=error[:MAX_ERROR_LENGTH],
    )


def outbox_release(*, event_ids: list[int]) -> None:
    """Hand back claimed events that were not tried (a worker stopping mid-batch), so that
    they are offered again at once instead of after the lease; the claim's attempt is not
    counted."""
    if event_ids:
        OutboxEvent.objects.filter(id__in=event_ids, delivered_at__isnull=True).update(
            leased_until=None, attempts=F("attempts") - 1
        )
