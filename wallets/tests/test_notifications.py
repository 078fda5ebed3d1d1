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
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ledger.models import OutboxEvent
from ledger.outbox import outbox_emit
from ledger.tests.invariants import assert_ledger_consistent
from wallets.models import EmailNotification, WebhookDelivery
from wallets.notifications import (
    amount_format,
    notification_emails_send,
    notification_emails_send_many,
    webhook_endpoint_create,
)
from wallets.tests.factories import register_user
from wallets.tests.money import fund, transfer_between
from wallets.worker import Worker


class RefusingBackend(EmailBackend):
    """A mail server that refuses, once each, the addresses in `refuse` (another recipient's
    messages go through), and fails to connect `unreachable` times."""

    refuse: set[str] = set()
    unreachable = 0

    def open(self):
        if RefusingBackend.unreachable > 0:
            RefusingBackend.unreachable -= 1
            raise ConnectionRefusedError("the mail server is down")
        return super().open()

    def send_messages(self, messages):
        for message in messages:
            if message.to[0] in RefusingBackend.refuse:
                RefusingBackend.refuse.discard(message.to[0])
                raise smtplib.SMTPRecipientsRefused({message.to[0]: (550, b"mailbox unavailable")})
        return super().send_messages(messages)


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


@pytest.fixture(autouse=True)
def _mail_server_behaves():
    RefusingBackend.refuse, RefusingBackend.unreachable = set(), 0
    yield
    RefusingBackend.refuse, RefusingBackend.unreachable = set(), 0


def _pair():
    alice_user, alice = register_user(name="Alice", email=None)
    bob_user, bob = register_user(name="Bob")
    fund(alice, 50_000)
    return (alice_user, alice), (bob_user, bob)


def _transfer_event(sender, recipient, amount: int) -> OutboxEvent:
    transfer_between(sender, recipient, amount)
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


# -- batches --------------------------------------------------------------------------------


def _trio():
    """Three customers, each funded, and a merchant-style endpoint on the second's wallet."""
    parties = [register_user(name=name) for name in ("Asha", "Bala", "Chandra")]
    for _, wallet in parties:
        fund(wallet, 50_000)
    webhook_endpoint_create(wallet=parties[1][1], url="https://hooks.example.com/wallet")
    return parties


def _transfers(parties, pairs: list[tuple[int, int]]) -> list[OutboxEvent]:
    for sender, recipient in pairs:
        transfer_between(parties[sender][1], parties[recipient][1], 100 + sender)
    return list(OutboxEvent.objects.filter(type="transfer.posted").order_by("-id")[: len(pairs)])[::-1]


def _emails_by_event(events: list[OutboxEvent]) -> dict[int, list[str]]:
    """Who was emailed about each event, from what the mail server received."""
    found: dict[int, list[str]] = {event.id: [] for event in events}
    for message in mail.outbox:
        for event in events:
            if f"Transaction: {event.payload['transaction_id']}" in message.body:
                found[event.id].append(message.to[0])
    return {event_id: sorted(to) for event_id, to in found.items()}


def _recorded(events: list[OutboxEvent]) -> dict[int, list[str]]:
    found: dict[int, list[str]] = {event.id: [] for event in events}
    for row in EmailNotification.objects.filter(event__in=events):
        found[row.event_id].append(row.email)
    return {event_id: sorted(to) for event_id, to in found.items()}


def _parties_of(parties, pairs) -> list[list[str]]:
    return [sorted([parties[s][0].email, parties[r][0].email]) for s, r in pairs]


@pytest.mark.django_db
def test_a_batch_sends_each_email_once_enqueues_each_delivery_once_and_a_rerun_adds_nothing():
    # given: three transfers (the second party has a webhook endpoint in two of them)
    parties = _trio()
    pairs = [(0, 1), (2, 0), (1, 2)]
    events = _transfers(parties, pairs)
    mail.outbox.clear()
    # when: one batch
    Worker(jobs=[]).run_once()
    # then
    assert list(_emails_by_event(events).values()) == _parties_of(parties, pairs)
    assert _recorded(events) == _emails_by_event(events)
    deliveries = WebhookDelivery.objects.filter(event__in=events)
    assert sorted(d.event_id for d in deliveries) == [events[0].id, events[2].id]
    assert all(e.delivered_at is not None for e in OutboxEvent.objects.filter(id__in=[e.id for e in events]))
    # when: the whole batch is delivered again (a takeover after a lost mark)
    OutboxEvent.objects.filter(id__in=[e.id for e in events]).update(delivered_at=None)
    Worker(jobs=[]).run_once()
    # then: nothing new was sent or enqueued
    assert len(mail.outbox) == 6
    assert EmailNotification.objects.filter(event__in=events).count() == 6
    assert WebhookDelivery.objects.filter(event__in=events).count() == 2


@pytest.mark.django_db
def test_a_refused_email_fails_only_its_event_and_the_retry_sends_only_what_is_missing(settings):
    # given: a mail server that refuses one mailbox once; its owner is in the second transfer
    # only, whose other party is emailed first (emails go out in wallet order)
    settings.EMAIL_BACKEND = "wallets.tests.test_notifications.RefusingBackend"
    parties = _trio()
    first, refused = sorted([0, 2], key=lambda i: parties[i][1].id)
    pairs = [(first, 1), (first, refused), (1, first)]
    events = _transfers(parties, pairs)
    mail.outbox.clear()
    RefusingBackend.refuse = {parties[refused][0].email}
    worker = Worker(jobs=[])
    # when
    worker.run_once()
    # then: the other two events are delivered with their emails; the second is not, and
    # keeps the record of the email that did reach the mail server
    rows = {e.id: e for e in OutboxEvent.objects.filter(id__in=[e.id for e in events])}
    assert [rows[e.id].delivered_at is not None for e in events] == [True, False, True]
    assert rows[events[1].id].last_error.startswith("SMTPRecipientsRefused")
    sent = _emails_by_event(events)
    expected = _parties_of(parties, pairs)
    assert list(sent.values()) == [expected[0], [parties[first][0].email], expected[2]]
    assert _recorded(events) == sent
    assert WebhookDelivery.objects.filter(event__in=events).count() == 2
    # when: the backoff has passed
    OutboxEvent.objects.filter(id=events[1].id).update(available_at=timezone.now() - timedelta(seconds=1))
    worker.run_once()
    # then: every party has exactly one email about each event
    assert list(_emails_by_event(events).values()) == _parties_of(parties, pairs)
    assert len(mail.outbox) == 6
    assert _recorded(events) == _emails_by_event(events)
    assert WebhookDelivery.objects.filter(event__in=events).count() == 2


@pytest.mark.django_db
def test_an_unreachable_mail_server_records_no_email_and_the_retry_sends_them_all(settings):
    # given
    settings.EMAIL_BACKEND = "wallets.tests.test_notifications.RefusingBackend"
    RefusingBackend.unreachable = 1
    parties = _trio()
    pairs = [(0, 1), (1, 2)]
    events = _transfers(parties, pairs)
    mail.outbox.clear()
    worker = Worker(jobs=[])
    # when
    worker.run_once()
    # then: the webhooks are enqueued, the emails are not recorded, the events come back
    assert mail.outbox == [] and EmailNotification.objects.filter(event__in=events).count() == 0
    assert WebhookDelivery.objects.filter(event__in=events).count() == 2
    failed = OutboxEvent.objects.filter(id__in=[e.id for e in events])
    assert all(e.delivered_at is None and e.last_error.startswith("ConnectionRefusedError") for e in failed)
    # when
    failed.update(available_at=timezone.now() - timedelta(seconds=1))
    worker.run_once()
    # then
    assert list(_emails_by_event(events).values()) == _parties_of(parties, pairs)
    assert _recorded(events) == _emails_by_event(events)
    assert WebhookDelivery.objects.filter(event__in=events).count() == 2


@pytest.mark.django_db
def test_a_batch_costs_the_same_few_queries_however_many_events_it_has():
    # given
    parties = _trio()
    small = _transfers(parties, [(0, 1), (1, 2)])
    large = _transfers(parties, [(0, 1), (1, 2), (2, 0), (0, 2), (2, 1), (1, 0), (0, 1), (1, 2)])
    counts = []
    for batch in (small, large):
        OutboxEvent.objects.filter(delivered_at__isnull=True).update(available_at=timezone.now() + timedelta(days=1))
        OutboxEvent.objects.filter(id__in=[e.id for e in batch]).update(available_at=timezone.now())
        # when
        with CaptureQueriesContext(connection) as queries:
            assert Worker(jobs=[]).deliver_batch() == len(batch)
        counts.append(len(queries))
    # then: claim, enqueue webhooks, read recipients, record emails, mark delivered, and the
    # savepoints the claim's and the emails' transactions are in the test's transaction
    assert counts[0] == counts[1] <= 9
    assert EmailNotification.objects.filter(event__in=small + large).count() == 20


@pytest.mark.django_db(transaction=True)
def test_concurrent_overlapping_batches_send_each_email_once():
    # given: two workers handed the same events in opposite orders (a takeover race)
    parties = _trio()
    pairs = [(0, 1), (1, 2), (2, 0), (0, 2)]
    events = _transfers(parties, pairs)
    mail.outbox.clear()
    barrier = threading.Barrier(2)
    results: list[int] = []
    errors: list[BaseException] = []

    def run(batch: list[OutboxEvent]) -> None:
        try:
            barrier.wait(10)
            results.append(notification_emails_send_many(batch))
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(batch,)) for batch in (events, events[::-1])]
    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # then: no deadlock, and each (event, user) once
    assert errors == []
    assert sum(results) == 8
    assert list(_emails_by_event(events).values()) == _parties_of(parties, pairs)
    assert _recorded(events) == _emails_by_event(events)
    assert_ledger_consistent()


def test_amounts_are_formatted_from_minor_units_without_floats():
    assert amount_format(amount=0, currency="INR") == "INR 0.00"
    assert amount_format(amount=5, currency="INR") == "INR 0.05"
    assert amount_format(amount=123_456_789, currency="USD") == "USD 1,234,567.89"
    assert amount_format(amount=-250, currency="EUR") == "-EUR 2.50"
