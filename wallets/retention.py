"""Retention: idempotency keys are kept IDEMPOTENCY_RETENTION_HOURS (at least 24, API.md),
then purged by the worker or `manage.py purge_idempotency_keys`. A retry after that is a new
request: clients must not retry a money-moving request with the same key after a day."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

# Rows deleted per statement, each its own short transaction, so a purge never holds many
# row locks or a long transaction on a busy table.
PURGE_BATCH = 5_000


def idempotency_cutoff(*, now: datetime | None = None) -> datetime:
    return (now or timezone.now()) - timedelta(hours=settings.WALLET["IDEMPOTENCY_RETENTION_HOURS"])


def idempotency_keys_purge(*, now: datetime | None = None, dry_run: bool = False) -> int:
    """Delete the keys older than the retention window; return how many (or would be)."""
    cutoff = idempotency_cutoff(now=now)
    with connection.cursor() as cursor:
        if dry_run:
            cursor.execute("SELECT count(*) FROM wallets_idempotencykey WHERE created_at < %s", [cutoff])
            return cursor.fetchone()[0]
    total = 0
    while True:
        with transaction.atomic(durable=True), connection.cursor() as cursor:
            # Served by the idempotency_created index.
            cursor.execute(
                "DELETE FROM wallets_idempotencykey WHERE id IN ("
                "  SELECT id FROM wallets_idempotencykey WHERE created_at < %s ORDER BY created_at LIMIT %s"
                "  FOR UPDATE SKIP LOCKED)",
                [cutoff, PURGE_BATCH],
            )
            deleted = cursor.rowcount
        total += deleted
        if deleted < PURGE_BATCH:
            return total
