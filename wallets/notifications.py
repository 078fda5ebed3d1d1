"""Notifications of money movements: signed webhooks to merchants and emails to users
(API.md "Notifications to merchants").

Both start from the outbox. The worker delivers each money event to the handlers registered
here (`wallets.events`), at least once, a claimed batch of events at a time: each handler
reads and writes the rows of the whole batch in one or two statements.

- `webhook_deliveries_enqueue_many` only inserts one WebhookDelivery per (event, endpoint of
  a merchant whose wallet is in the event's `wallet_ids`), for all the events in one
  statement; the unique constraint makes a rerun of the handler insert nothing. It never
  talks HTTP, so a slow or dead merchant endpoint cannot hold up the outbox.
- `webhook_deliveries_run`, a periodic worker job, claims due deliveries with FOR UPDATE SKIP
  LOCKED and a lease (committed at once: no lock is held during the HTTP call, and no ledger
  row is ever locked here), POSTs each, then marks it delivered, or schedules a retry with
  exponential backoff, or dead-letters it after WEBHOOK_MAX_ATTEMPTS. A worker killed
  mid-delivery leaves its rows leased; when the lease runs out another run claims them, so
  no event is lost (and the receiver may see one twice: it deduplicates by the event id,
  which is the delivery's and stays the same on every attempt).
- `notification_emails_send_many` sends one email per user whose wallet is in `wallet_ids`.
  The EmailNotification rows of the batch are inserted first (one statement, ON CONFLICT DO
  NOTHING RETURNING: only the new ones are sent), in the transaction that sends them over one
  mail connection: a second run for the same (event, user) finds the row and sends nothing,
  and a concurrent one waits on the unique key until this commits. A failed send deletes
  the rows of its event that were not sent, before the commit, and fails that event only,
  so the outbox retry sends exactly those. A worker killed while sending commits none of the
  batch's rows, so the retry sends the batch's emails again: at least once, as the outbox.

`webhook_deliveries_enqueue(event)` and `notification_emails_send(event)` are the same for a
single event.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import logging
import secrets
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import NamedTuple
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db import connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from ledger.audit import audit_record
from ledger.models import Entry, OutboxEvent
from wallets.events import EventsFailed, handler_register
from wallets.gateway import webhook_deliver
from wallets.models import EmailNotification, Wallet, WebhookDelivery, WebhookEndpoint
from walletsite.errors import ValidationFailed, WebhookEndpointNotFound

logger = logging.getLogger("wallets.notifications")

SIGNATURE_HEADER = "Wallet-Signature"
# The money events of the outbox contract (notes: every payload has `wallet_ids`). Other
# events (the worker's own test events, future non-money events) notify nobody.
MONEY_EVENT_TYPES = (
    "transfer.posted",
    "payment.succeeded",
    "payment.received",
    "refund.created",
    "cashback.granted",
    "cashback.reversed",
    "withdrawal.requested",
    "withdrawal.succeeded",
    "withdrawal.failed",
    "adjustment.posted",
)
# Retries back off from a minute, doubling: with 8 attempts the last one is about two hours
# after the first, so an endpoint down for an hour still gets every event.
RETRY_BASE_SECONDS = 60
RETRY_MAX_SECONDS = 6 * 3600
# Deliveries per claim, and how long the claim holds them. A run posts them one after the
# other and starts none after RUN_BUDGET_SECONDS (handing the rest back), so a claim lives
# at most the budget plus one delivery (connect and read, each within the timeout of at
# most 30 s): well inside the lease, so no second worker takes a row over while it is
# being posted. The budget also keeps a slow endpoint from holding the worker's loop, and
# the outbox behind it, for more than seconds.
CLAIM_BATCH = 10
LEASE_SECONDS = 120
RUN_BUDGET_SECONDS = 15
MAX_ERROR_LENGTH = 2000
MAX_ENDPOINTS_PER_WALLET = 10

_TABLE = WebhookDelivery._meta.db_table
# As ledger.outbox's claim: pick due rows nobody holds (SKIP LOCKED passes over rows another
# worker is claiming right now), lease them and count the attempt, in one statement.
_CLAIM_SQL = f"""
UPDATE {_TABLE}
   SET leased_until = statement_timestamp() + make_interval(secs => %s),
       attempts = attempts + 1
 WHERE id IN (
       SELECT id
         FROM {_TABLE}
        WHERE status = 'pending'
          AND next_attempt_at <= statement_timestamp()
          AND (leased_until IS NULL OR leased_until < statement_timestamp())
        ORDER BY next_attempt_at, id
        LIMIT %s
          FOR UPDATE SKIP LOCKED)
RETURNING id
"""  # noqa: S608 - the table name is our model's, the values are parameters


# The deliveries of a batch of events, inserted from the live endpoints of their wallets
# (`wanted`: one row per event and wallet); a second run for the same event meets the
# (event, endpoint) unique key and inserts nothing. Inserted in key order, so that two
# workers on overlapping batches wait on each other instead of deadlocking.
_ENQUEUE_SQL = f"""
INSERT INTO {_TABLE}
       (public_id, endpoint_id, event_id, event_type, status, attempts, next_attempt_at, created_at, last_error)
SELECT gen_random_uuid(), endpoint.id, wanted.event_id, wanted.event_type, 'pending', 0,
       statement_timestamp(), statement_timestamp(), ''
  FROM unnest(%s::bigint[], %s::text[], %s::uuid[]) AS wanted(event_id, event_type, wallet_id)
  JOIN {WebhookEndpoint._meta.db_table} AS endpoint
    ON endpoint.wallet_id = wanted.wallet_id AND endpoint.deleted_at IS NULL
 ORDER BY wanted.event_id, endpoint.id
    ON CONFLICT ON CONSTRAINT webhook_delivery_once DO NOTHING
RETURNING id
"""  # noqa: S608 - the table names are our models', the values are parameters

_USER_TABLE = get_user_model()._meta.db_table
# Who is told about each (event, wallet) of a batch, and the wallet's entry in the event's
# transaction (NULL when it has none, or the event names no transaction).
_RECIPIENTS_SQL = f"""
SELECT wanted.event_id, wallet.handle, wallet.currency, usr.id, usr.email, usr.name, usr.is_active,
       entry.amount, entry.balance_after
  FROM unnest(%s::bigint[], %s::uuid[], %s::uuid[]) AS wanted(event_id, wallet_id, transaction_id)
  JOIN {Wallet._meta.db_table} AS wallet ON wallet.id = wanted.wallet_id
  JOIN {_USER_TABLE} AS usr ON usr.id = wallet.user_id
  LEFT JOIN {Entry._meta.db_table} AS entry
    ON entry.transaction_id = wanted.transaction_id AND entry.account_id = wallet.account_id
 ORDER BY wanted.event_id, wallet.id, entry.id
"""  # noqa: S608 - the table names are our models', the values are parameters

_EMAIL_TABLE = EmailNotification._meta.db_table
# The emails of a batch, recorded before they are sent; RETURNING names the new ones (those
# no earlier run recorded), the only ones to send. In key order, as _ENQUEUE_SQL.
_EMAILS_RECORD_SQL = f"""
INSERT INTO {_EMAIL_TABLE} (event_id, user_id, event_type, email, subject)
SELECT * FROM unnest(%s::bigint[], %s::uuid[], %s::text[], %s::text[], %s::text[])
 ORDER BY 1, 2
    ON CONFLICT ON CONSTRAINT email_notification_once DO NOTHING
RETURNING event_id, user_id
"""  # noqa: S608 - the table name is our model's, the values are parameters

# The records of emails that could not be sent: the retry sends them.
_EMAILS_FORGET_SQL = f"""
DELETE FROM {_EMAIL_TABLE}
 WHERE (event_id, user_id) IN (SELECT * FROM unnest(%s::bigint[], %s::uuid[]))
"""  # noqa: S608 - the table name is our model's, the values are parameters


# -- endpoints -----------------------------------------------------------------------------


def webhook_url_validate(*, url: str) -> str:
    """An absolute http(s) URL with a host; https only in production, where it must also not
    name this machine or a private network (a merchant must not make the worker probe the
    inside of the deployment)."""
    parts = urlsplit(url)
    schemes = ("https",) if settings.PRODUCTION else ("http", "https")
    if parts.scheme not in schemes or not parts.hostname:
        allowed = " or ".join(f"{s}://" for s in schemes)
        raise ValidationFailed(f"url: must be an absolute {allowed} URL", errors=[_url_error(allowed)])
    if parts.username or parts.password:
        raise ValidationFailed("url: must not carry credentials", errors=[_url_error("no credentials")])
    if settings.PRODUCTION and _internal_host(parts.hostname):
        raise ValidationFailed("url: must be a public address", errors=[_url_error("a public address")])
    return url


def _url_error(expected: str) -> dict[str, str]:
    return {"field": "url", "message": f"Must be {expected}"}


def _internal_host(host: str) -> bool:
    if host == "localhost" or host.endswith((".localhost", ".internal", ".local")):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not address.is_global


def webhook_endpoint_create(*, wallet: Wallet, url: str) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint for the merchant's wallet; return it and its secret, which the
    caller shows once."""
    webhook_url_validate(url=url)
    if WebhookEndpoint.objects.filter(wallet=wallet, deleted_at__isnull=True).count() >= MAX_ENDPOINTS_PER_WALLET:
        raise ValidationFailed(f"A merchant may have at most {MAX_ENDPOINTS_PER_WALLET} webhook endpoints")
    secret = f"whsec_{secrets.token_urlsafe(32)}"
    endpoint = WebhookEndpoint.objects.create(wallet=wallet, url=url, secret=secret)
    logger.info("webhook endpoint created", extra={"endpoint_id": str(endpoint.id), "wallet_id": str(wallet.id)})
    return endpoint, secret


def webhook_endpoints_of(*, wallet: Wallet) -> list[WebhookEndpoint]:
    """The wallet's live endpoints, newest first."""
    return list(WebhookEndpoint.objects.filter(wallet=wallet, deleted_at__isnull=True).order_by("-created_at", "id"))


def webhook_endpoint_delete(*, wallet: Wallet, endpoint_id: str) -> None:
    """Stop sending to an endpoint: it gets no new events, and what was still pending for it
    is cancelled. The row stays, because its deliveries refer to it."""
    try:
        key = uuid.UUID(str(endpoint_id))
    except ValueError:
        raise WebhookEndpointNotFound() from None
    with transaction.atomic():
        # Lock order: the endpoint row, then its deliveries (no ledger rows here).
        endpoint = (
            WebhookEndpoint.objects.select_for_update().filter(id=key, wallet=wallet, deleted_at__isnull=True).first()
        )
        if endpoint is None:
            raise WebhookEndpointNotFound()
        endpoint.deleted_at = timezone.now()
        endpoint.save(update_fields=["deleted_at"])
        WebhookDelivery.objects.filter(endpoint=endpoint, status=WebhookDelivery.Status.PENDING).update(
            status=WebhookDelivery.Status.CANCELLED, leased_until=None
        )


# -- the outbox handlers -------------------------------------------------------------------


def _wallet_ids(event: OutboxEvent) -> list[uuid.UUID]:
    """The event's wallet ids that are well-formed (a payload is ours, but a bad id must not
    make every retry of the event fail)."""
    found = []
    for raw in (event.payload or {}).get("wallet_ids") or []:
        try:
            found.append(uuid.UUID(str(raw)))
        except ValueError:
            logger.warning("event names a malformed wallet id", extra={"event_id": event.id})
    return list(dict.fromkeys(found))


def webhook_deliveries_enqueue_many(events: Sequence[OutboxEvent]) -> int:
    """Outbox handler: one pending delivery per live endpoint of a wallet each event
    concerns; return how many were new (0 when the handler runs again). One statement for
    all the events, no HTTP."""
    event_ids: list[int] = []
    event_types: list[str] = []
    wallet_ids: list[uuid.UUID] = []
    for event in events:
        for wallet_id in _wallet_ids(event):
            event_ids.append(event.id)
            event_types.append(event.type)
            wallet_ids.append(wallet_id)
    if not event_ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(_ENQUEUE_SQL, [event_ids, event_types, wallet_ids])
        return len(cursor.fetchall())


def webhook_deliveries_enqueue(event: OutboxEvent) -> int:
    """webhook_deliveries_enqueue_many for one event."""
    return webhook_deliveries_enqueue_many([event])


AMOUNT_FORMAT_EXPONENT = 2
EMAIL_TITLES = {
    "transfer.posted": "Transfer",
    "payment.succeeded": "Money added",
    "payment.received": "Payment",
    "refund.created": "Refund",
    "cashback.granted": "Cashback",
    "cashback.reversed": "Cashback reversed",
    "withdrawal.requested": "Withdrawal requested",
    "withdrawal.succeeded": "Withdrawal completed",
    "withdrawal.failed": "Withdrawal failed, money returned",
    "adjustment.posted": "Adjustment",
}


def amount_format(*, amount: int, currency: str) -> str:
    """Minor units as `INR 1,234.56`, in integer arithmetic (no float ever touches money)."""
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**AMOUNT_FORMAT_EXPONENT)
    return f"{sign}{currency} {major:,}.{minor:0{AMOUNT_FORMAT_EXPONENT}d}"


class _Recipient(NamedTuple):
    """A user to tell about an event, through one of their wallets in it."""

    event_id: int
    handle: str
    currency: str
    user_id: uuid.UUID
    email: str
    name: str
    is_active: bool
    # The wallet's entry in the event's transaction, if it has one.
    amount: int | None
    balance_after: int | None


def _email_content(*, event: OutboxEvent, recipient: _Recipient) -> tuple[str, str]:
    payload = event.payload or {}
    title = EMAIL_TITLES.get(event.type, event.type)
    currency = payload.get("currency") or recipient.currency
    lines = [f"Hello {recipient.name or recipient.email},", ""]
    if recipient.amount is not None:
        verb = "received" if recipient.amount > 0 else "sent"
        money = amount_format(amount=abs(recipient.amount), currency=currency)
        subject = f"{title}: you {verb} {money}"
        lines.append(f"{title}: {money} {'credited to' if recipient.amount > 0 else 'debited from'} your wallet.")
        lines.append(f"Balance after: {amount_format(amount=recipient.balance_after, currency=currency)}")
    else:
        money = amount_format(amount=int(payload.get("amount") or 0), currency=currency)
        subject = f"{title}: {money}"
        lines.append(f"{title}: {money}.")
    if payload.get("transaction_id"):
        lines.append(f"Transaction: {payload['transaction_id']}")
    lines += ["", f"Wallet {recipient.handle}"]
    return subject[:200], "\n".join(lines)


def _transaction_id(event: OutboxEvent) -> uuid.UUID | None:
    raw = (event.payload or {}).get("transaction_id")
    if not raw:
        return None
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        return None


def _recipients(events: Sequence[OutboxEvent]) -> list[_Recipient]:
    """Whom to email about the events, one per (event, user), in one query."""
    event_ids: list[int] = []
    wallet_ids: list[uuid.UUID] = []
    transaction_ids: list[uuid.UUID | None] = []
    for event in events:
        transaction_id = _transaction_id(event)
        for wallet_id in _wallet_ids(event):
            event_ids.append(event.id)
            wallet_ids.append(wallet_id)
            transaction_ids.append(transaction_id)
    if not event_ids:
        return []
    with connection.cursor() as cursor:
        cursor.execute(_RECIPIENTS_SQL, [event_ids, wallet_ids, transaction_ids])
        rows = cursor.fetchall()
    # A user has one wallet, and an event names a wallet once; a wallet with two entries in
    # the transaction comes twice, ordered by entry: the later one is used.
    by_key = {(row[0], row[3]): _Recipient(*row) for row in rows}
    return [r for r in by_key.values() if r.email and r.is_active]


def _emails_send(events: Sequence[OutboxEvent]) -> tuple[int, dict[int, Exception]]:
    """Send the emails of the events that no earlier run sent; return how many were sent
    and the exception of each event whose emails could not all be sent."""
    recipients = _recipients(events)
    if not recipients:
        return 0, {}
    by_id = {event.id: event for event in events}
    contents = [_email_content(event=by_id[r.event_id], recipient=r) for r in recipients]
    with transaction.atomic():
        # Record first: a concurrent run for the same (event, user) waits on the unique key
        # until this commits, then finds the row and sends nothing.
        with connection.cursor() as cursor:
            cursor.execute(
                _EMAILS_RECORD_SQL,
                [
                    [r.event_id for r in recipients],
                    [r.user_id for r in recipients],
                    [by_id[r.event_id].type for r in recipients],
                    [r.email for r in recipients],
                    [subject for subject, _ in contents],
                ],
            )
            new = set(cursor.fetchall())
        outgoing = [
            (recipient, content)
            for recipient, content in zip(recipients, contents, strict=True)
            if (recipient.event_id, recipient.user_id) in new
        ]
        sent, unsent, failures = _send_each(outgoing)
        if unsent:
            with connection.cursor() as cursor:
                cursor.execute(_EMAILS_FORGET_SQL, [[r.event_id for r in unsent], [r.user_id for r in unsent]])
    # One line per batch: the EmailNotification rows say which email went where and when.
    if sent:
        logger.info("notification emails sent", extra={"count": sent, "events": len({r.event_id for r in recipients})})
    return sent, failures


def _send_each(
    outgoing: list[tuple[_Recipient, tuple[str, str]]],
) -> tuple[int, list[_Recipient], dict[int, Exception]]:
    """Send the messages one by one over one mail connection; return how many were sent,
    the recipients not sent to, and the exception of each event that failed. After an
    event's first failure its other messages wait for its retry; a failed send reconnects
    for the next message, and a connection that cannot be opened fails all that is left (a
    mail server that is down costs the batch one timeout, not one per event)."""
    mail = get_connection(fail_silently=False)
    sent = 0
    unsent: list[_Recipient] = []
    failures: dict[int, Exception] = {}
    down: Exception | None = None
    connected = False
    try:
        for recipient, (subject, body) in outgoing:
            if down is not None or recipient.event_id in failures:
                failures.setdefault(recipient.event_id, down)
                unsent.append(recipient)
                continue
            try:
                if not connected:
                    try:
                        mail.open()
                    except Exception as exc:
                        down = exc
                        raise
                    connected = True
                mail.send_messages([EmailMessage(subject, body, None, [recipient.email], connection=mail)])
            except Exception as exc:
                failures[recipient.event_id] = exc
                unsent.append(recipient)
                if connected:
                    connected = False
                    with contextlib.suppress(Exception):
                        mail.close()
                continue
            sent += 1
    finally:
        with contextlib.suppress(Exception):
            mail.close()
    return sent, unsent, failures


def notification_emails_send_many(events: Sequence[OutboxEvent]) -> int:
    """Outbox handler: one email per user whose wallet an event concerns, at most once per
    (event, user); return how many were sent by this run. Raises EventsFailed naming the
    events whose emails could not all be sent (the others' are sent and recorded)."""
    sent, failures = _emails_send(events)
    if failures:
        raise EventsFailed(failures)
    return sent


def notification_emails_send(event: OutboxEvent) -> int:
    """notification_emails_send_many for one event; raises what the sending raised."""
    sent, failures = _emails_send([event])
    if failures:
        raise failures[event.id]
    return sent


def handlers_register() -> None:
    """Subscribe both handlers to every money event. Webhooks first: enqueuing is cheap and
    does not depend on the mail server being up."""
    for event_type in MONEY_EVENT_TYPES:
        handler_register(event_type=event_type, many=webhook_deliveries_enqueue_many)
        handler_register(event_type=event_type, many=notification_emails_send_many)


handlers_register()


# -- delivery (the worker job) -------------------------------------------------------------


def webhook_retry_delay(*, attempts: int) -> timedelta:
    """How long after the `attempts`-th failed attempt the next one is due: 1, 2, 4, ...
    minutes, at most 6 hours."""
    exponent = min(max(attempts - 1, 0), 20)
    return timedelta(seconds=min(RETRY_BASE_SECONDS * 2**exponent, RETRY_MAX_SECONDS))


def webhook_body(*, delivery: WebhookDelivery) -> dict:
    """What the merchant receives: the same on every attempt (only the signature's
    timestamp changes)."""
    event = delivery.event
    return {
        "id": delivery.public_event_id,
        "type": event.type,
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
        "data": event.payload,
    }


def webhook_deliveries_claim(
    *, limit: int = CLAIM_BATCH, lease_seconds: float = LEASE_SECONDS
) -> list[WebhookDelivery]:
    """Lease up to `limit` due deliveries, counting an attempt for each, and commit at once:
    nothing stays locked while they are posted."""
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL, [float(lease_seconds), int(limit)])
        ids = [row[0] for row in cursor.fetchall()]
    return list(WebhookDelivery.objects.filter(id__in=ids).select_related("endpoint", "event").order_by("id"))


def webhook_delivery_attempt(*, delivery: WebhookDelivery) -> bool:
    """POST one claimed delivery and record the outcome; True when the merchant took it
    (any 2xx)."""
    status: int | None = None
    error = ""
    try:
        answer = webhook_deliver(
            url=delivery.endpoint.url,
            event=webhook_body(delivery=delivery),
            secret=delivery.endpoint.secret,
            header_name=SIGNATURE_HEADER,
            timeout=settings.WALLET["WEBHOOK_TIMEOUT_SECONDS"],
            # A merchant's URL: in production it may reach public addresses only, checked
            # when sending (webhook_url_validate sees only the name, not where it points).
            public_only=settings.PRODUCTION,
        )
        status = answer.status
        if not 200 <= status < 300:
            error = f"HTTP {status}"
    except (OSError, http.client.HTTPException, ValueError) as exc:
        error = f"{type(exc).__name__}: {exc}"
    if not error:
        _mark_delivered(delivery=delivery, status=status)
        return True
    _mark_failed(delivery=delivery, status=status, error=error)
    return False


def _mark_delivered(*, delivery: WebhookDelivery, status: int | None) -> None:
    # Whoever holds the claim now, the merchant has the event: a pending row is done.
    WebhookDelivery.objects.filter(id=delivery.id, status=WebhookDelivery.Status.PENDING).update(
        status=WebhookDelivery.Status.DELIVERED,
        delivered_at=Now(),
        leased_until=None,
        last_status_code=status,
        last_error="",
    )
    logger.info(
        "webhook delivered",
        extra={"delivery_id": delivery.id, "event_type": delivery.event_type, "attempts": delivery.attempts},
    )


def _mark_failed(*, delivery: WebhookDelivery, status: int | None, error: str) -> None:
    dead = delivery.attempts >= settings.WALLET["WEBHOOK_MAX_ATTEMPTS"]
    retry_in = webhook_retry_delay(attempts=delivery.attempts)
    # Only while the claim is still ours (the attempts count is the one we claimed with): a
    # worker whose lease ran out must not reschedule a row another worker has taken over.
    WebhookDelivery.objects.filter(
        id=delivery.id, status=WebhookDelivery.Status.PENDING, attempts=delivery.attempts
    ).update(
        status=WebhookDelivery.Status.DEAD if dead else WebhookDelivery.Status.PENDING,
        next_attempt_at=Now() + retry_in,
        leased_until=None,
        last_status_code=status,
        last_error=error[:MAX_ERROR_LENGTH],
    )
    logger.warning(
        "webhook dead-lettered" if dead else "webhook delivery failed; will retry",
        extra={
            "delivery_id": delivery.id,
            "event_type": delivery.event_type,
            "attempts": delivery.attempts,
            "error": error[:300],
            "retry_in_seconds": None if dead else retry_in.total_seconds(),
        },
    )


def _release(deliveries: list[WebhookDelivery]) -> None:
    """Hand back claimed deliveries not tried, without counting the attempt."""
    for delivery in deliveries:
        WebhookDelivery.objects.filter(
            id=delivery.id, status=WebhookDelivery.Status.PENDING, attempts=delivery.attempts
        ).update(leased_until=None, attempts=delivery.attempts - 1)


def webhook_deliveries_run(
    *, limit: int = CLAIM_BATCH, lease_seconds: float = LEASE_SECONDS, budget_seconds: float = RUN_BUDGET_SECONDS
) -> int:
    """The worker job: claim and post due deliveries until none is due or the time budget is
    spent; return how many were attempted."""
    started = time.monotonic()
    attempted = 0
    while time.monotonic() - started < budget_seconds:
        claimed = webhook_deliveries_claim(limit=limit, lease_seconds=lease_seconds)
        if not claimed:
            break
        for index, delivery in enumerate(claimed):
            if time.monotonic() - started >= budget_seconds:
                _release(claimed[index:])
                return attempted
            webhook_delivery_attempt(delivery=delivery)
            attempted += 1
    return attempted


# -- staff ---------------------------------------------------------------------------------


def webhook_delivery_retry(*, delivery_id: int, actor, reason: str = "retry from the admin") -> bool:
    """Offer a dead-lettered (or still failing) delivery again now, with a fresh set of
    attempts; audited. False when it was delivered or cancelled meanwhile."""
    with transaction.atomic():
        delivery = WebhookDelivery.objects.select_for_update().filter(id=delivery_id).first()
        if delivery is None or delivery.status not in (WebhookDelivery.Status.DEAD, WebhookDelivery.Status.PENDING):
            return False
        previous = delivery.status
        WebhookDelivery.objects.filter(id=delivery.id).update(
            status=WebhookDelivery.Status.PENDING, attempts=0, next_attempt_at=Now(), leased_until=None
        )
        audit_record(
            actor=actor,
            actor_label=getattr(actor, "email", str(actor)),
            action="webhook_delivery.retry",
            target=f"webhook_delivery:{delivery.id}",
            reason=reason,
            data={"previous_status": previous, "attempts": delivery.attempts},
        )
    return True
