"""accounts.pin: the peppered digest, the lockout, and the lockout under concurrency."""

from __future__ import annotations

import hashlib
import hmac
import threading
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import Pin
from accounts.pin import pin_set, pin_verify
from accounts.tests.factories import UserFactory
from walletsite.errors import InvalidPin, PinLocked, ValidationFailed


@pytest.fixture
def user(db):
    user = UserFactory()
    pin_set(user=user, pin="1234")
    return user


def _wrong(user, n, now=None):
    for _ in range(n):
        with pytest.raises(InvalidPin):
            pin_verify(user=user, pin="9999", now=now)


def test_pin_is_stored_as_a_peppered_hmac_of_user_and_pin(user):
    # when
    record = Pin.objects.get(user=user)

    # then
    expected = hmac.new(settings.WALLET["PIN_PEPPER"].encode(), f"{user.id}:1234".encode(), hashlib.sha256).hexdigest()
    assert record.digest == expected
    assert "1234" not in record.digest


def test_same_pin_of_two_users_stores_different_digests(user):
    # given
    other = UserFactory()

    # when
    pin_set(user=other, pin="1234")

    # then
    assert Pin.objects.get(user=other).digest != Pin.objects.get(user=user).digest


@pytest.mark.parametrize(
    "pin", ["123", "1234567", "12a4", "\u0661\u0662\u0663\u0664", "\uff11\uff12\uff13\uff14", "", " 1234", 1234, None]
)
def test_pin_set_refuses_anything_but_4_to_6_ascii_digits(user, pin):
    # when / then
    with pytest.raises(ValidationFailed):
        pin_set(user=user, pin=pin)


def test_right_pin_passes_and_resets_the_counter(user):
    # given
    _wrong(user, 3)

    # when
    pin_verify(user=user, pin="1234")

    # then
    assert Pin.objects.get(user=user).failed_attempts == 0


def test_wrong_pin_is_counted_and_committed(user):
    # when
    _wrong(user, 2)

    # then
    assert Pin.objects.get(user=user).failed_attempts == 2


def test_fifth_wrong_pin_is_invalid_pin_and_locks_for_15_minutes(user):
    # given
    now = timezone.now()
    _wrong(user, 4, now=now)

    # when: the fifth
    with pytest.raises(InvalidPin) as fifth:
        pin_verify(user=user, pin="9999", now=now)

    # then
    assert fifth.value.status == 403
    record = Pin.objects.get(user=user)
    assert record.locked_until == now + timedelta(seconds=900)
    assert record.failed_attempts == 0
    # the sixth, even with the right PIN, is locked
    with pytest.raises(PinLocked) as sixth:
        pin_verify(user=user, pin="1234", now=now + timedelta(seconds=1))
    assert sixth.value.status == 423
    assert sixth.value.extra["retry_after"] == 899
    # still locked just before the end
    with pytest.raises(PinLocked):
        pin_verify(user=user, pin="1234", now=now + timedelta(seconds=899))


def test_lock_ends_after_15_minutes(user):
    # given
    now = timezone.now()
    _wrong(user, 5, now=now)

    # when
    pin_verify(user=user, pin="1234", now=now + timedelta(seconds=900))

    # then
    record = Pin.objects.get(user=user)
    assert record.locked_until is None and record.failed_attempts == 0


def test_lock_ends_when_locked_until_passes_in_the_database(user):
    # given: locked, then the lock moved into the past
    _wrong(user, 5)
    Pin.objects.filter(user=user).update(locked_until=timezone.now() - timedelta(seconds=1))

    # when / then: the counter starts afresh
    _wrong(user, 4)
    pin_verify(user=user, pin="1234")


def test_counting_starts_afresh_after_a_lock(user):
    # given
    now = timezone.now()
    _wrong(user, 5, now=now)
    later = now + timedelta(seconds=901)

    # when: four wrong after the lock
    _wrong(user, 4, now=later)

    # then: not locked yet, the fifth locks again
    with pytest.raises(InvalidPin):
        pin_verify(user=user, pin="9999", now=later)
    with pytest.raises(PinLocked):
        pin_verify(user=user, pin="1234", now=later)


def test_pin_verify_without_a_pin_is_invalid_pin(db):
    # given
    user = UserFactory()

    # when / then
    with pytest.raises(InvalidPin):
        pin_verify(user=user, pin="1234")


def test_pin_verify_refuses_to_run_inside_a_transaction(user):
    # Durable: nested inside a caller's transaction the count would roll back with it.
    with pytest.raises(RuntimeError), transaction.atomic():
        pin_verify(user=user, pin="1234")


@pytest.mark.django_db(transaction=True)
def test_concurrent_wrong_pins_are_counted_one_by_one():
    # given
    user = UserFactory()
    pin_set(user=user, pin="1234")
    threads_count = 50
    start = threading.Barrier(threads_count)
    outcomes: list[str] = []
    lock = threading.Lock()

    def guess():
        try:
            start.wait()
            try:
                pin_verify(user=user, pin="0000")
                outcome = "passed"
            except InvalidPin:
                outcome = "invalid_pin"
            except PinLocked:
                outcome = "pin_locked"
            with lock:
                outcomes.append(outcome)
        finally:
            connection.close()

    # when
    threads = [threading.Thread(target=guess) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then: exactly five were compared, the rest found the lock
    assert len(outcomes) == threads_count
    assert outcomes.count("invalid_pin") == settings.WALLET["PIN_MAX_FAILURES"]
    assert outcomes.count("pin_locked") == threads_count - settings.WALLET["PIN_MAX_FAILURES"]
    record = Pin.objects.get(user=user)
    assert record.locked_until is not None and record.locked_until > timezone.now()
