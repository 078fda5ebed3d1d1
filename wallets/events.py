"""Who gets told about an outbox event: a registry of handlers by event type.

The worker (`wallets.worker`) delivers each claimed event with `event_deliver`, which runs
every handler registered for the event's type and then the handlers for every event. A
handler that raises makes the whole event fail and come back later (with backoff), so
handlers must be safe to run again for the same event: delivery is at least once, and a
retry reruns the handlers that had succeeded too. Receivers deduplicate by event id.

The handler for every event logs "event delivered" and counts it; it runs last, so it says
so only once every other handler succeeded. Merchant webhooks register as one more handler
(`@handler_for("payment.received")`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from ledger.models import OutboxEvent
from walletsite import metrics

logger = logging.getLogger("wallets.events")

Handler = Callable[[OutboxEvent], None]

# "*" holds the handlers for every event.
ALL_EVENTS = "*"
_handlers: dict[str, list[Handler]] = {}


def handler_register(*, event_type: str, handler: Handler) -> None:
    """Add a handler for one event type (or ALL_EVENTS). Registering the same function twice
    is a no-op, so a module imported twice does not deliver twice."""
    registered = _handlers.setdefault(event_type, [])
    if handler not in registered:
        registered.append(handler)


def handler_unregister(*, event_type: str, handler: Handler) -> None:
    registered = _handlers.get(event_type, [])
    if handler in registered:
        registered.remove(handler)


def handler_for(event_type: str) -> Callable[[Handler], Handler]:
    """Decorator form of handler_register."""

    def decorate(handler: Handler) -> Handler:
        handler_register(event_type=event_type, handler=handler)
        return handler

    return decorate


def handlers_of(event_type: str) -> list[Handler]:
    """The handlers an event of this type goes to, in the order they run."""
    return [*_handlers.get(event_type, []), *_handlers.get(ALL_EVENTS, [])]


def event_deliver(*, event: OutboxEvent) -> None:
    """Run every handler of the event; the first that raises stops it, and the exception
    propagates to the worker, which schedules a retry."""
    for handler in handlers_of(event.type):
        handler(event)


@handler_for(ALL_EVENTS)
def event_log_delivered(event: OutboxEvent) -> None:
    """One JSON log line per delivered event, with its id and type only: payloads name
    wallets and amounts, which do not belong in logs."""
    lag = (datetime.now(UTC) - event.created_at).total_seconds() if event.created_at else None
    logger.info(
        "event delivered",
        extra={
            "event_id": event.id,
            "event_type": event.type,
            "attempts": event.attempts,
            "lag_seconds": round(lag, 3) if lag is not None else None,
        },
    )
    metrics.OUTBOX_DELIVERED.labels(event.type).inc()
