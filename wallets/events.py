"""Who gets told about an outbox event: a registry of handlers by event type.

The worker (`wallets.worker`) delivers a claimed batch of events with `events_deliver`, which
runs, for each event, every handler registered for its type and then the handlers for every
event. A handler is either per event (`handler(event)`) or batched (`many=`: one call takes
a list of events, so that it can read and write the rows of the whole batch in a few
statements instead of a few per event).

A handler that raises makes the event fail and come back later (with backoff); the other
events of the batch are not held back by it. A batched handler that raises is run again
with one event at a time, so that only the events it really fails on fail; one that knows
which events failed raises `EventsFailed` with them instead, and the others count as
handled. An event that failed gets none of its later handlers. Handlers must therefore be
safe to run again for the same event: delivery is at least once, and a retry reruns the
handlers that had succeeded too. Receivers deduplicate by event id.

The handler for every event logs "event delivered" and counts it; it runs last, so it says
so only for the events every other handler succeeded with. Merchant webhooks register as one
more handler (`@handler_for("payment.received")`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.db import InterfaceError, OperationalError

from ledger.models import OutboxEvent
from walletsite import metrics

logger = logging.getLogger("wallets.events")

Handler = Callable[[OutboxEvent], object]
ManyHandler = Callable[[Sequence[OutboxEvent]], object]

# "*" holds the handlers for every event.
ALL_EVENTS = "*"
# The database itself failing is no event's fault: it fails the whole batch, whose events
# are delivered again once their lease has run out (see wallets.worker).
DATABASE_DOWN = (OperationalError, InterfaceError)


@dataclass(frozen=True)
class Registration:
    """A handler and how it is called: with one event, or (`many`) with a list of them."""

    handler: Callable
    many: bool = False


class EventsFailed(Exception):
    """Raised by a batched handler that failed on some events only: the exception of each
    (by event id). The events it does not name were handled."""

    def __init__(self, failures: Mapping[int, BaseException]) -> None:
        super().__init__(f"{len(failures)} event(s) failed")
        self.failures = dict(failures)


@dataclass
class DeliveryOutcome:
    """What became of a batch: the events that failed (with why), and those not started
    because a stop was requested; every other event reached all of its handlers."""

    failed: dict[int, BaseException] = field(default_factory=dict)
    not_started: list[OutboxEvent] = field(default_factory=list)


_handlers: dict[str, list[Registration]] = {}


def handler_register(*, event_type: str, handler: Handler | None = None, many: ManyHandler | None = None) -> None:
    """Add a handler for one event type (or ALL_EVENTS): `handler` takes one event, `many`
    a list of events (give one of the two). Registering the same function twice is a no-op,
    so a module imported twice does not deliver twice."""
    registration = _registration(handler=handler, many=many)
    registered = _handlers.setdefault(event_type, [])
    if registration not in registered:
        registered.append(registration)


def handler_unregister(*, event_type: str, handler: Handler | None = None, many: ManyHandler | None = None) -> None:
    registration = _registration(handler=handler, many=many)
    registered = _handlers.get(event_type, [])
    if registration in registered:
        registered.remove(registration)


def _registration(*, handler: Handler | None, many: ManyHandler | None) -> Registration:
    if (handler is None) == (many is None):
        raise ValueError("give either handler (one event) or many (a list of events)")
    return Registration(handler=many, many=True) if many is not None else Registration(handler=handler)


def handler_for(event_type: str, *, many: bool = False) -> Callable[[Callable], Callable]:
    """Decorator form of handler_register (`many=True` for a handler of a list of events)."""

    def decorate(function: Callable) -> Callable:
        if many:
            handler_register(event_type=event_type, many=function)
        else:
            handler_register(event_type=event_type, handler=function)
        return function

    return decorate


def handlers_of(event_type: str) -> list[Registration]:
    """The handlers an event of this type goes to, in the order they run."""
    return [*_handlers.get(event_type, []), *_handlers.get(ALL_EVENTS, [])]


def events_deliver(events: Sequence[OutboxEvent], *, stop: Callable[[], bool] = lambda: False) -> DeliveryOutcome:
    """Run every handler of every event. Events with the same handlers (all the money
    events, say) go through them together, in order, each handler getting those that have
    not failed yet. `stop` is asked before each such group: once it says so, the groups not
    started are returned as not started. A database failure propagates (DATABASE_DOWN)."""
    chains: dict[str, tuple[Registration, ...]] = {}
    groups: dict[tuple[Registration, ...], list[OutboxEvent]] = {}
    for event in events:
        chain = chains.get(event.type)
        if chain is None:
            chain = chains[event.type] = tuple(handlers_of(event.type))
        groups.setdefault(chain, []).append(event)
    outcome = DeliveryOutcome()
    for chain, group in groups.items():
        if stop():
            outcome.not_started.extend(group)
            continue
        for registration in chain:
            live = [event for event in group if event.id not in outcome.failed]
            if not live:
                break
            outcome.failed.update(_run(registration, live))
    return outcome


def _run(registration: Registration, events: list[OutboxEvent]) -> dict[int, BaseException]:
    """Run one handler on events; return the exceptions of those it failed on."""
    if not registration.many:
        failed: dict[int, BaseException] = {}
        for event in events:
            try:
                registration.handler(event)
            except DATABASE_DOWN:
                raise
            except Exception as exc:
                failed[event.id] = exc
        return failed
    try:
        registration.handler(events)
    except DATABASE_DOWN:
        raise
    except EventsFailed as exc:
        return {event_id: error for event_id, error in exc.failures.items()}
    except Exception as exc:
        if len(events) == 1:
            return {events[0].id: exc}
        # Which of them is it? One at a time, so that the others get through.
        failed = {}
        for event in events:
            failed.update(_run(registration, [event]))
        return failed
    return {}


def event_log_delivered(events: Sequence[OutboxEvent]) -> None:
    """One JSON log line per delivered event, with its id and type only: payloads name
    wallets and amounts, which do not belong in logs."""
    now = datetime.now(UTC)
    for event in events:
        lag = (now - event.created_at).total_seconds() if event.created_at else None
        logger.info(
            "event delivered",
            extra={
                "event_id": event.id,
                "event_type": event.type,
                "attempts": event.attempts,
                "lag_seconds": round(lag, 3) if lag is not None else None,
            },
        )
    for event_type, count in Counter(event.type for event in events).items():
        metrics.OUTBOX_DELIVERED.labels(event_type).inc(count)


handler_register(event_type=ALL_EVENTS, many=event_log_delivered)
