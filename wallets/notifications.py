"""Notifications of money movements: signed webhooks to merchants and emails to users
(API.md "Notifications to merchants").

Both start from the outbox. The worker delivers each money event to the handlers registered
here (`wallets.events`), at least once:

- `webhook_deliveries_enqueue` only inserts one WebhookDelivery per (event, endpoint of a
  merchant whose wallet is in the event's `wallet_ids`); the unique constraint makes a rerun
  of the handler insert nothing. It never talks HTTP, so a slow or dead merchant endpoint
  cannot hold up the outbox.
- `webhook_deliveries_run`, a periodic worker job, claims due deliveries with FOR UPDATE SKIP
  LOCKED and a lease (committed at once: no lock is held during the HTTP call, and no ledger
  row is ever locked here), POSTs each, then marks it delivered, or schedules a retry with
  exponential backoff, or dead-letters it after WEBHOOK_MAX_ATTEMPTS. A worker killed
  mid-delivery leaves its rows leased; when the lease runs out another run claims them, so
  no event is lost (and the receiver may see one twice: it deduplicates by the event id,
  which is the delivery's and stays the same on every attempt).
- `notification_emails_send` sends one email per user whose wallet is in `wallet_ids`. The
  EmailNotification row is inserted first, in the transaction that sends: a second run for
  the same (event, user) finds the row and sends nothing, and a failed send rolls the row
  back so the outbox retry sends it.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import secrets
import time
import uuid
from datetime import timedelta
from urllib.parse import urlsplit

from django.conf import settings
from django.core.mail import send_mail
from django.db import connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from ledger.audit import audit_record
from ledger.models import Entry, OutboxEvent
from wallets.events import handler_register
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


# The deliveries of one event, inserted from the live endpoints of its wallets; a second run
# for the same event meets the (event, endpoint) unique key and inserts nothing.
_ENQUEUE_SQL = f"""
INSERT INTO {_TABLE}
       (public_id, endpoint_id, event_id, event_type, status, attempts, next_attempt_at, created_at, last_error)
SELECT gen_random_uuid(), endpoint.id, %s, %s, 'pending', 0, statement_timestamp(), statement_timestamp(), ''
  FROM {WebhookEndpoint._meta.db_table} AS endpoint
 WHERE endpoint.wallet_id = ANY(%s::uuid[])
   AND endpoint.deleted_at IS NULL
 ORDER BY endpoint.id
    ON CONFLICT ON CONSTRAINT webhook_delivery_once DO NOTHING
RETURNING id
"""  # noqa: S608 - the table names are our models', the values are parameters


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


def webhook_deliveries_enqueue(event: OutboxEvent) -> int:
    """Outbox handler: one pending delivery per live endpoint of a wallet the event concerns;
    return how many were new (0 when the handler runs again). One statement, no HTTP."""
    wallet_ids = _wallet_ids(event)
    if not wallet_ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(_ENQUEUE_SQL, [event.id, event.type, wallet_ids])
        return len(cursor.fetchall())


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


def _email_content(*, event: OutboxEvent, wallet: Wallet, entry: Entry | None) -> tuple[str, str]:
    payload = event.payload or {}
    title = EMAIL_TITLES.get(event.type, event.type)
    currency = payload.get("currency") or wallet.currency
    lines = [f"Hello {wallet.user.name or wallet.user.email},", ""]
    if entry is not None:
        verb = "received" if entry.amount > 0 else "sent"
        money = amount_format(amount=abs(entry.amount), currency=currency)
        subject = f"{title}: you {verb} {money}"
        lines.append(f"{title}: {money} {'credited to' if entry.amount > 0 else 'debited from'} your wallet.")
        lines.append(f"Balance after: {amount_format(amount=entry.balance_after, currency=currency)}")
    else:
        money = amount_format(amount=int(payload.get("amount") or 0), currency=currency)
        subject = f"{title}: {money}"
        lines.append(f"{title}: {money}.")
    if payload.get("transaction_id"):
        lines.append(f"Transaction: {payload['transaction_id']}")
    lines += ["", f"Wallet {wallet.handle}"]
    return subject[:200], "\n".join(lines)


def notification_emails_send(event: OutboxEvent) -> int:
    """Outbox handler: one email per user whose wallet the event concerns, at most once per
    (event, user); return how many were sent by this run."""
    wallet_ids = _wallet_ids(event)
    if not wallet_ids:
        return 0
    wallets = list(Wallet.objects.filter(id__in=wallet_ids).select_related("user").order_by("id"))
    entries: dict[int, Entry] = {}
    transaction_id = (event.payload or {}).get("transaction_id")
    if transaction_id:
        try:
            entries = {
                e.account_id: e
                for e in Entry.objects.filter(
                    transaction_id=uuid.UUID(str(transaction_id)), account_id__in=[w.account_id for w in wallets]
                )
            }
        except ValueError:
            entries = {}
    sent = 0
    for wallet in wallets:
        sent += _email_once(event=event, wallet=wallet, entry=entries.get(wallet.account_id))
    return sent


def _email_once(*, event: OutboxEvent, wallet: Wallet, entry: Entry | None) -> int:
    user = wallet.user
    if not user.email or not user.is_active:
        return 0
    subject, body = _email_content(event=event, wallet=wallet, entry=entry)
    with transaction.atomic():
        # Insert first: a concurrent run for the same (event, user) waits on the unique key
        # until this commits, then finds the row and sends nothing. If sending raises, the
        # row rolls back with it and the outbox retry sends the email.
        _, created = EmailNotification.objects.get_or_create(
            event_id=event.id,
            user=user,
            defaults={"event_type": event.type, "email": user.email, "subject": subject},
        )
        if not created:
            return 0
        send_mail(subject, body, None, [user.email], fail_silently=False)
    logger.info("notification email sent", extra={"event_id": event.id, "event_type": event.type})
    return 1


def handlers_register() -> None:
    """Subscribe both handlers to every money event. Webhooks first: enqueuing is cheap and
    does not depend on the mail server being up."""
    for event_type in MONEY_EVENT_TYPES:
        handler_register(event_type=event_type, handler=webhook_deliveries_enqueue)
        handler_register(event_type=event_type, handler=notification_emails_send)


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
