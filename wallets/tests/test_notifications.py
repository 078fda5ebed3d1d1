"""Users' notification emails: one per money movement to each user whose wallet the event
names, once per (event, user) however often the outbox handler runs (also concurrently), and
sent again by the retry when the mail server failed."""

from __future__ import annotations

import smtplib
import threading
from datetime import timedelta

import pytest
from django.core import mail
from django.core.mail.backends.locmem import EmailBackend
from django.db import connection, transaction
from django.utils import timezone

from ledger.models import OutboxEvent
from ledger.outbox import outbox_emit
from ledger.posting import atomic
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import EmailNotification
from wallets.notifications import amount_format, notification_emails_send
from wallets.tests.factories import register_user
from wallets.tests.money import fund
from wallets.transfers import transfer_create
from wallets.worker import Worker


class FailingOnceBackend(EmailBackend):
    """A mail server that refuses the first message it is given (the outside world: the
    only thing replaced here), then accepts as the in-memory backend does."""

    failures_left = 0

    def send_messages(self, messages):
        if FailingOnceBackend.failures_left > 0:
            FailingOnceBackend.failures_left -= 1
            raise smtplib.SMTPServerDisconnected("the mail server went away")
        return super().send_messages(messages)


@pytest.fixture(autouse=True)
def _only_this_tests_events(request):
    marker = request.node.get_closest_marker("django_db")
    if marker is None:
        return
    request.getfixturevalue("transactional_db" if marker.kwargs.get("transaction") else "db")
    with transaction.atomic():
        OutboxEvent.objects.filter(delivered_at__isnull=True).update(available_at=timezone.now() + timedelta(days=1))


def _pair():
    alice_user, alice = register_user(name="Alice", email=None)
    bob_user, bob = register_user(name="Bob")
    fund(alice, 50_000)
    return (alice_user, alice), (bob_user, bob)


def _transfer_event(sender, recipient, amount: int) -> OutboxEvent:
    with atomic():
        transfer_create(sender=sender, to=recipient.handle, amount=amount)
    return OutboxEvent.objects.filter(type="transfer.posted").latest("id")


@pytest.mark.django_db
def test_each_party_gets_one_email_even_when_the_handler_runs_twice():
    # given
    (alice_user, alice), (bob_user, bob) = _pair()
    event = _transfer_event(alice, bob, 12_345)
    mail.outbox.clear()
    # when: the outbox delivers the event twice (a retry after a later handler failed)
    sent = [notification_emails_send(event), notification_emails_send(event)]
    # then
    assert sent == [2, 0]
    by_recipient = {m.to[0]: m for m in mail.outbox}
    assert sorted(by_recipient) == sorted([alice_user.email, bob_user.email])
    assert by_recipient[alice_user.email].subject == "Transfer: you sent INR 123.45"
    assert by_recipient[bob_user.email].subject == "Transfer: you received INR 123.45"
    assert "Balance after: INR 376.55" in by_recipient[alice_user.email].body
    assert "Balance after: INR 123.45" in by_recipient[bob_user.email].body
    assert event.payload["transaction_id"] in by_recipient[bob_user.email].body
    rows = EmailNotification.objects.filter(event=event)
    assert sorted(r.email for r in rows) == sorted([alice_user.email, bob_user.email])


@pytest.mark.django_db
def test_an_event_without_a_transaction_says_what_happened():
    # given: a withdrawal request (money held, nothing posted yet)
    user, wallet = register_user(name="Chitra")
    with transaction.atomic():
        event = outbox_emit(
            type="withdrawal.requested",
            payload={"wallet_ids": [str(wallet.id)], "withdrawal_id": "w1", "amount": 99_900, "currency": "INR"},
        )
    mail.outbox.clear()
    # when
    notification_emails_send(event)
    # then
    (message,) = mail.outbox
    assert message.to == [user.email]
    assert message.subject == "Withdrawal requested: INR 999.00"
    assert message.body.startswith("Hello Chitra,")


@pytest.mark.django_db
def test_events_naming_no_wallet_send_nothing():
    with transaction.atomic():
        none = outbox_emit(type="transfer.posted", payload={"amount": 1})
        bad = outbox_emit(type="transfer.posted", payload={"wallet_ids": ["nope"], "amount": 1})
    mail.outbox.clear()
    assert notification_emails_send(none) == notification_emails_send(bad) == 0
    assert mail.outbox == []


@pytest.mark.django_db
def test_a_failed_send_is_not_recorded_and_the_retry_sends_it(settings):
    # given: a mail server that fails once
    settings.EMAIL_BACKEND = "wallets.tests.test_notifications.FailingOnceBackend"
    FailingOnceBackend.failures_left = 1
    (_, alice), (_, bob) = _pair()
    event = _transfer_event(alice, bob, 500)
    mail.outbox.clear()
    # when: the first run fails on the first email, the retry runs
    with pytest.raises(smtplib.SMTPServerDisconnected):
        notification_emails_send(event)
    recorded_after_failure = EmailNotification.objects.filter(event=event).count()
    notification_emails_send(event)
    # then: each party has exactly one email
    assert recorded_after_failure == 0
    assert len(mail.outbox) == 2
    assert EmailNotification.objects.filter(event=event).count() == 2


@pytest.mark.django_db(transaction=True)
def test_concurrent_runs_of_the_handler_send_once():
    # given
    (_, alice), (_, bob) = _pair()
    event = _transfer_event(alice, bob, 700)
    mail.outbox.clear()
    barrier = threading.Barrier(4)
    results: list[int] = []
    errors: list[BaseException] = []

    def run():
        try:
            barrier.wait(10)
            results.append(notification_emails_send(OutboxEvent.objects.get(id=event.id)))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    # when: four workers deliver the same event at once
    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # then
    assert errors == []
    assert sum(results) == 2
    assert len(mail.outbox) == 2
    assert EmailNotification.objects.filter(event=event).count() == 2
    assert_ledger_consistent()


@pytest.mark.django_db(transaction=True)
def test_the_worker_sends_the_emails_of_a_transfer_once():
    # given
    (alice_user, alice), (bob_user, bob) = _pair()
    mail.outbox.clear()
    _transfer_event(alice, bob, 2_000)
    # when: the worker delivers the outbox, then the event is delivered again
    Worker(jobs=[]).run_once()
    event = OutboxEvent.objects.get(type="transfer.posted")
    OutboxEvent.objects.filter(id=event.id).update(delivered_at=None)
    Worker(jobs=[]).run_once()
    # then
    assert sorted(m.to[0] for m in mail.outbox) == sorted([alice_user.email, bob_user.email])
    assert OutboxEvent.objects.get(id=event.id).delivered_at is not None
    assert_ledger_consistent()


def test_amounts_are_formatted_from_minor_units_without_floats():
    assert amount_format(amount=0, currency="INR") == "INR 0.00"
    assert amount_format(amount=5, currency="INR") == "INR 0.05"
    assert amount_format(amount=123_456_789, currency="USD") == "USD 1,234,567.89"
    assert amount_format(amount=-250, currency="EUR") == "-EUR 2.50"
