"""The transaction PIN: a keyed hash in the database and an online lockout counted there.

A PIN has at most 10^6 values, so the stored digest is HMAC-SHA256 under a pepper that lives
outside the database (settings.WALLET["PIN_PEPPER"]): a copy of the database alone does not
let anyone search the PINs offline. Online guessing is bounded by the lockout, which is
counted in the Pin row under a row lock, so concurrent guesses cannot overshoot it.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from accounts.models import Pin, User
from walletsite.db import Query, model_columns, model_from_row
from walletsite.errors import InvalidPin, PinLocked, ValidationFailed

# ASCII digits only: `\d` would also accept other scripts' digits, which keypads never send.
PIN_FORMAT = re.compile(r"[0-9]{4,6}")


def pin_digest(*, user_id, pin: str) -> str:
    """HMAC-SHA256(pepper, "<user id>:<pin>") in hex. The user id in the message makes two
    users with the same PIN store different digests."""
    pepper = settings.WALLET["PIN_PEPPER"].encode()
    return hmac.new(pepper, f"{user_id}:{pin}".encode(), hashlib.sha256).hexdigest()


def pin_set(*, user: User, pin: str) -> Pin:
    """Store (or replace) the user's PIN and clear any lockout. Runs inside the caller's
    transaction, so registration creates the user and the PIN together."""
    if not isinstance(pin, str) or not PIN_FORMAT.fullmatch(pin):
        raise ValidationFailed("pin: must be 4 to 6 digits", errors=[{"field": "pin", "message": "4 to 6 digits"}])
    record, _ = Pin.objects.update_or_create(
        user=user,
        defaults={"digest": pin_digest(user_id=user.id, pin=pin), "failed_attempts": 0, "locked_until": None},
    )
    return record


def pin_evaluate(*, record: Pin | None, user_id, pin: str, now: datetime) -> tuple[Exception | None, bool]:
    """The decision of one PIN attempt against the user's Pin row, locked by the caller:
    (the refusal or None, whether `record` changed and must be saved). 423 pin_locked while
    locked, 403 invalid_pin when wrong or unset. A wrong guess counts on `record`; the
    PIN_MAX_FAILURES-th wrong PIN in a row still answers invalid_pin and starts the lock; the
    next attempts, right or wrong, answer pin_locked until it ends."""
    max_failures = settings.WALLET["PIN_MAX_FAILURES"]
    lock_seconds = settings.WALLET["PIN_LOCK_SECONDS"]
    if record is None:
        return InvalidPin("No PIN is set for this user"), False
    if record.locked_until is not None and record.locked_until > now:
        wait = max(1, math.ceil((record.locked_until - now).total_seconds()))
        return PinLocked(f"Too many wrong PINs; try again in {wait} seconds", retry_after=wait), False
    candidate = pin_digest(user_id=user_id, pin=pin) if isinstance(pin, str) else ""
    if hmac.compare_digest(candidate, record.digest):
        if record.failed_attempts or record.locked_until is not None:
            record.failed_attempts = 0
            record.locked_until = None
            record.updated_at = now
            return None, True
        return None, False
    record.failed_attempts += 1
    left = max_failures - record.failed_attempts
    if left <= 0:
        # Lock, and start counting afresh once the lock ends.
        record.failed_attempts = 0
        record.locked_until = now + timedelta(seconds=lock_seconds)
        detail = f"The PIN is wrong; PIN-authorized requests are locked for {lock_seconds} seconds"
        left = 0
    else:
        record.locked_until = None
        detail = f"The PIN is wrong; {left} attempts left before the lock"
    record.updated_at = now
    return InvalidPin(detail, attempts_left=left), True


PIN_STATE_FIELDS = ["failed_attempts", "locked_until", "updated_at"]

# -- many users' PINs in one transaction (the transfer batcher), as statements it runs with
# its others (walletsite.db.pipelined)


def pins_lock_query(*, user_ids) -> Query[dict]:
    """The users' Pin rows, locked FOR UPDATE in user id order (so concurrent batches queue
    rather than deadlock), by user id."""
    return Query(
        f"SELECT {_PIN_COLUMNS} FROM accounts_pin AS p"  # noqa: S608 - the model's column names
        " WHERE p.user_id = ANY(%s::uuid[]) ORDER BY p.user_id FOR UPDATE OF p",
        [sorted(set(user_ids))],
        read=lambda rows: {record.user_id: record for record in (model_from_row(Pin, row) for row in rows)},
    )


def pins_save_query(*, records) -> Query[list]:
    """Save the lockout state (PIN_STATE_FIELDS) pin_evaluate changed on locked rows."""
    return Query(
        "UPDATE accounts_pin AS p SET failed_attempts = u.failed_attempts, locked_until = u.locked_until,"
        " updated_at = u.updated_at"
        " FROM unnest(%s::uuid[], %s::int[], %s::timestamptz[], %s::timestamptz[])"
        " AS u(user_id, failed_attempts, locked_until, updated_at)"
        " WHERE p.user_id = u.user_id",
        [
            [record.user_id for record in records],
            [record.failed_attempts for record in records],
            [record.locked_until for record in records],
            [record.updated_at for record in records],
        ],
    )


_PIN_COLUMNS = model_columns(Pin, "p")


def pin_verify(*, user: User, pin: str, now: datetime | None = None) -> None:
    """Check the PIN or raise: 423 pin_locked while locked, 403 invalid_pin when wrong
    (pin_evaluate).

    The check runs in its own durable transaction with the Pin row locked FOR UPDATE, so
    concurrent guesses are counted one after another and at most PIN_MAX_FAILURES of them are
    ever compared during one lock window. A wrong guess is committed before the error is
    raised: the request fails, but the count it added stays. The caller must therefore not be
    inside an atomic block (durable=True refuses that), and takes its own money transaction
    afterwards. `now` exists so tests can move the clock. (The transfer batcher checks PINs
    inside its batch's transaction instead, with the same pin_evaluate, so a wrong guess
    commits with the batch.)
    """
    now = now or timezone.now()
    with transaction.atomic(durable=True):
        record = Pin.objects.select_for_update().filter(user_id=user.id).first()
        refusal, changed = pin_evaluate(record=record, user_id=user.id, pin=pin, now=now)
        if changed:
            record.save(update_fields=PIN_STATE_FIELDS)
    # Raised after the block has committed, so the count survives the failed request.
    if refusal is not None:
        raise refusal
