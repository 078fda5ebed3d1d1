"""The transactional outbox: events written in the same database transaction as the change
they announce, delivered at least once by the worker."""

from __future__ import annotations

from django.db import connection

from ledger.models import OutboxEvent


def outbox_emit(*, type: str, payload: dict) -> OutboxEvent:
    """Record an event inside the caller's transaction: it exists if and only if the change
    it announces committed."""
    if not connection.in_atomic_block:
        raise RuntimeError("outbox_emit must run inside the transaction of the change it announces")
    return OutboxEvent.objects.create(type=type, payload=payload)
