"""Merchant webhooks end to end, over real HTTP to a local receiver: the outbox handler only
enqueues, deliveries are signed and verifiable with the endpoint's secret, an endpoint that
is down and comes back gets every event (each id once after deduplication), a worker that
dies mid-delivery loses nothing (also a real `run_worker` killed with SIGKILL), dead-letter
after N attempts, and a staff retry delivers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from urllib.parse import quote

import pytest
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.db.models.functions import Now
from django.utils import timezone

from accounts.services import staff_create
from ledger.models import AuditLog, OutboxEvent
from ledger.outbox import outbox_emit
from ledger.tests.invariants import assert_ledger_consistent
from wallets import notifications
from wallets.gateway import webhook_deliver
from wallets.models import Wallet, WebhookDelivery, WebhookEndpoint
from wallets.notifications import (
    webhook_deliveries_claim,
    webhook_deliveries_enqueue,
    webhook_deliveries_run,
    webhook_delivery_retry,
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_retry_delay,
)
from wallets.tests import webhook_receiver as rx
from wallets.tests.factories import register_user
from wallets.tests.money import fund, transfer_between
from wallets.worker import PeriodicJob, Worker, job_deliver_webhooks

ROOT = django_settings.BASE_DIR


@pytest.fixture(autouse=True)
def _only_this_tests_events(request):
    """Events other tests' threads committed are put out of reach (as in test_worker)."""
    marker = request.node.get_closest_marker("django_db")
    if marker is None:
        return
    request.getfixturevalue("transactional_db" if marker.kwargs.get("transaction") else "db")
    with transaction.atomic():
        OutboxEvent.objects.filter(delivered_at__isnull=True).update(available_at=timezone.now() + timedelta(days=1))


@pytest.fixture
def receiver():
    started = rx.receiver_start()
    yield started
    rx.receiver_stop(started)


@pytest.fixture(autouse=True)
def _short_timeouts(settings):
    settings.WALLET = {**settings.WALLET, "WEBHOOK_TIMEOUT_SECONDS": 0.5}


def _merchant(receiver: rx.Receiver | None = None, url: str | None = None):
    _, wallet = register_user(role="merchant")
    endpoint, secret = webhook_endpoint_create(wallet=wallet, url=url or receiver.url)
    return wallet, endpoint, secret


def _customer(amount: int = 100_000) -> Wallet:
    _, wallet = register_user()
    fund(wallet, amount)
    return wallet


def _transfer(sender: Wallet, recipient: Wallet, amount: int) -> None:
    transfer_between(sender, recipient, amount)


def _payment_received(customer: Wallet, merchant: Wallet, amount: int) -> OutboxEvent:
    """A payment.received event as the payments flow emits it (the contract's payload)."""
    with transaction.atomic():
        return outbox_emit(
            type="payment.received",
            payload={
                "wallet_ids": [str(customer.id), str(merchant.id)],
                "payment_id": f"pay_{customer.id.hex[:8]}_{amount}",
                "merchant_wallet_id": str(merchant.id),
                "customer_wallet_id": str(customer.id),
                "amount": amount,
                "fee": 0,
                "currency": "INR",
                "order_id": f"order-{amount}",
            },
        )


def _worker() -> Worker:
    return Worker(jobs=[PeriodicJob("deliver_webhooks", 1, job_deliver_webhooks)])


def _time_passes() -> None:
    """Every pending delivery's backoff is over."""
    WebhookDelivery.objects.filter(status="pending").update(next_attempt_at=Now())


def _leases_expire() -> None:
    WebhookDelivery.objects.filter(leased_until__isnull=False).update(leased_until=Now() - timedelta(seconds=1))


# -- enqueueing ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_handler_enqueues_one_delivery_per_event_and_live_endpoint():
    # given: a merchant with two live endpoints and a deleted one
    merchant, first, _ = _merchant(url="https://a.example.com/h")
    second, _ = webhook_endpoint_create(wallet=merchant, url="https://b.example.com/h")
    gone, _ = webhook_endpoint_create(wallet=merchant, url="https://c.example.com/h")
    webhook_endpoint_delete(wallet=merchant, endpoint_id=str(gone.id))
    customer = _customer()
    event = _payment_received(customer, merchant, 500)
    # when: the outbox handler runs twice for the event (a retried delivery)
    created = [webhook_deliveries_enqueue(event), webhook_deliveries_enqueue(event)]
    # then
    assert created == [2, 0]
    deliveries = list(WebhookDelivery.objects.filter(event=event))
    assert {d.endpoint_id for d in deliveries} == {first.id, second.id}
    assert {d.event_type for d in deliveries} == {"payment.received"}
    assert len({d.public_event_id for d in deliveries}) == 2
    assert all(d.status == "pending" and d.attempts == 0 for d in deliveries)


@pytest.mark.django_db
def test_events_of_other_wallets_and_malformed_payloads_enqueue_nothing():
    # given
    _merchant(url="https://a.example.com/h")
    alice, bob = _customer(), _customer()
    with transaction.atomic():
        bad = outbox_emit(type="payment.received", payload={"wallet_ids": ["not-a-uuid", 7], "amount": 1})
        none = outbox_emit(type="payment.received", payload={"amount": 1})
    _transfer(alice, bob, 100)
    transfer_event = OutboxEvent.objects.filter(type="transfer.posted").latest("id")
    # when / then
    assert webhook_deliveries_enqueue(bad) == 0
    assert webhook_deliveries_enqueue(none) == 0
    assert webhook_deliveries_enqueue(transfer_event) == 0
    assert not WebhookDelivery.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_the_outbox_never_waits_for_a_merchant_endpoint(receiver):
    # given: an endpoint that hangs on every request
    receiver.mode = rx.HANG
    merchant, _, _ = _merchant(receiver)
    _transfer(_customer(), merchant, 700)
    # when: the worker delivers the outbox (no webhook job)
    started = time.monotonic()
    Worker(jobs=[]).run_once()
    # then: the event is delivered to its handlers at once, and the endpoint saw nothing yet
    assert time.monotonic() - started < 5
    assert not OutboxEvent.objects.filter(delivered_at__isnull=True, available_at__lte=timezone.now()).exists()
    assert WebhookDelivery.objects.get().status == "pending"
    assert not receiver.arrived.is_set()
    assert_ledger_consistent()


# -- delivery ------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_delivery_is_signed_with_the_endpoints_secret(receiver):
    # given
    merchant, _, secret = _merchant(receiver)
    customer = _customer()
    event = _payment_received(customer, merchant, 2500)
    # when
    _worker().run_once()
    # then
    (received,) = receiver.received
    assert receiver.verify(received, secret=secret) == pytest.approx(time.time(), abs=10)
    with pytest.raises(Exception, match="matches"):
        receiver.verify(received, secret="whsec_someone_else")
    delivery = WebhookDelivery.objects.get()
    event.refresh_from_db()
    assert received.event == {
        "id": delivery.public_event_id,
        "type": "payment.received",
        "created_at": event.created_at.isoformat().replace("+00:00", "Z"),
        "data": event.payload,
    }
    assert received.headers["Content-Type"] == "application/json"
    assert delivery.status == "delivered" and delivery.attempts == 1 and delivery.last_status_code == 200
    assert delivery.delivered_at is not None and delivery.leased_until is None


@pytest.mark.django_db(transaction=True)
def test_endpoint_down_for_a_while_then_up_gets_every_event_each_id_once_after_dedup(receiver):
    # given: a merchant receiving six events while its endpoint answers 500
    receiver.mode = rx.FAIL
    merchant, endpoint, secret = _merchant(receiver)
    customers = [_customer(), _customer()]
    for n in range(4):
        _transfer(customers[n % 2], merchant, 100 + n)
    for n in range(2):
        _payment_received(customers[n], merchant, 1000 + n)
    _transfer(customers[0], customers[1], 5)  # not the merchant's: never sent to it
    worker = _worker()
    # when: two rounds fail ...
    worker.run_once()
    worker.run_once()  # nothing is due during the backoff
    assert len(receiver.received) == 6
    _time_passes()
    worker.run_once()
    assert len(receiver.received) == 12
    # ... one round reaches the merchant, whose answers come after the sender's timeout ...
    receiver.mode, receiver.slow_seconds = rx.SLOW, 0.8
    _time_passes()
    worker.run_once()
    # ... and then the endpoint is up
    receiver.mode = rx.OK
    _time_passes()
    worker.run_once()
    # then: every event arrived, some twice; deduplicated by id, each once
    deliveries = list(WebhookDelivery.objects.filter(endpoint=endpoint).select_related("event"))
    assert len(deliveries) == 6
    assert all(d.status == "delivered" and d.attempts == 4 for d in deliveries)
    accepted = receiver.accepted_ids()
    kept = receiver.deduplicated()
    assert len(accepted) == 12
    assert set(kept) == {d.public_event_id for d in deliveries}
    assert sorted(e["type"] for e in kept.values()) == ["payment.received"] * 2 + ["transfer.posted"] * 4
    for delivery in deliveries:
        assert kept[delivery.public_event_id]["data"] == delivery.event.payload
    for received in receiver.received:
        receiver.verify(received, secret=secret)
    # and the backoff had grown between attempts
    assert webhook_retry_delay(attempts=1) < webhook_retry_delay(attempts=3)
    assert_ledger_consistent()


@pytest.mark.django_db(transaction=True)
def test_a_failed_attempt_is_retried_after_an_exponential_backoff(receiver):
    # given
    receiver.mode = rx.FAIL
    merchant, _, _ = _merchant(receiver)
    _payment_received(_customer(), merchant, 300)
    # when
    _worker().run_once()
    # then
    delivery = WebhookDelivery.objects.get()
    wait = delivery.next_attempt_at - timezone.now()
    assert timedelta(seconds=50) < wait <= timedelta(seconds=60)
    assert delivery.status == "pending" and delivery.attempts == 1
    assert delivery.last_status_code == 500 and delivery.last_error == "HTTP 500"
    assert [webhook_retry_delay(attempts=n).total_seconds() for n in (1, 2, 3, 8)] == [60, 120, 240, 7680]
    assert webhook_retry_delay(attempts=30) == timedelta(hours=6)


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_endpoint_counts_as_a_failed_attempt():
    # given: nothing listens on the port
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    merchant, _, _ = _merchant(url=f"http://127.0.0.1:{port}/hooks")
    _payment_received(_customer(), merchant, 300)
    # when
    _worker().run_once()
    # then
    delivery = WebhookDelivery.objects.get()
    assert delivery.status == "pending" and delivery.attempts == 1
    assert delivery.last_status_code is None and "Error" in delivery.last_error


# -- crashes ---------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_worker_that_dies_mid_delivery_loses_nothing(receiver):
    # given: two deliveries; a worker claims both, posts the first, and dies before marking
    merchant, _, secret = _merchant(receiver)
    customer = _customer()
    _payment_received(customer, merchant, 100)
    _payment_received(customer, merchant, 200)
    Worker(jobs=[]).run_once()
    claimed = webhook_deliveries_claim(limit=10, lease_seconds=60)
    assert len(claimed) == 2
    body = notifications.webhook_body(delivery=claimed[0])
    webhook_deliver(url=receiver.url, event=body, secret=secret, header_name="Wallet-Signature")
    # when: another worker runs while the lease holds, and again once it has expired
    during_lease = webhook_deliveries_run()
    _leases_expire()
    after_lease = webhook_deliveries_run()
    # then: both delivered; the first reached the merchant twice, with one id
    assert (during_lease, after_lease) == (0, 2)
    deliveries = list(WebhookDelivery.objects.order_by("id"))
    assert [(d.status, d.attempts) for d in deliveries] == [("delivered", 2), ("delivered", 2)]
    assert len(receiver.accepted_ids()) == 3
    assert set(receiver.deduplicated()) == {d.public_event_id for d in deliveries}


@pytest.mark.django_db(transaction=True)
def test_a_late_answer_of_a_worker_whose_lease_expired_does_not_reschedule(receiver):
    # given: worker A claimed, its lease expired, worker B took the delivery over
    merchant, _, _ = _merchant(receiver)
    _payment_received(_customer(), merchant, 100)
    Worker(jobs=[]).run_once()
    (stale,) = webhook_deliveries_claim(limit=10, lease_seconds=60)
    _leases_expire()
    (current,) = webhook_deliveries_claim(limit=10, lease_seconds=60)
    # when: A's attempt fails late, then B's succeeds
    receiver.mode = rx.FAIL
    assert notifications.webhook_delivery_attempt(delivery=stale) is False
    receiver.mode = rx.OK
    assert notifications.webhook_delivery_attempt(delivery=current) is True
    # then
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 2, 200)


def _test_database_url() -> str:
    db = connection.settings_dict
    return f"postgresql://{db['USER']}@localhost:{db['PORT']}/{db['NAME']}?host={quote(db['HOST'])}"


@pytest.mark.django_db(transaction=True)
def test_run_worker_killed_with_sigkill_mid_delivery_loses_nothing(receiver):
    # given: a real worker process posting to an endpoint that holds the request
    receiver.mode = rx.HANG
    merchant, _, secret = _merchant(receiver)
    _payment_received(_customer(), merchant, 4200)
    env = {
        **os.environ,
        "DATABASE_URL": _test_database_url(),
        "PYTHONUNBUFFERED": "1",
        "WEBHOOK_TIMEOUT_SECONDS": "30",
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "run_worker"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # when: the worker is killed while the merchant has the request
        if not receiver.arrived.wait(60):
            proc.kill()
            pytest.fail(f"the worker never posted: {proc.communicate(timeout=10)[0]}")
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # then: the delivery is still leased to the dead worker, not lost and not delivered
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.leased_until > timezone.now()
    assert OutboxEvent.objects.get(type="payment.received").delivered_at is not None
    # and once the lease runs out, another worker delivers it
    receiver.mode = rx.OK
    receiver.release.set()
    _leases_expire()
    assert webhook_deliveries_run() == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert list(receiver.deduplicated()) == [delivery.public_event_id]
    for received in receiver.received:
        receiver.verify(received, secret=secret)


# -- dead letters and staff retries ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_after_n_attempts_a_delivery_is_dead_and_a_staff_retry_delivers_it(receiver, settings):
    # given: three attempts allowed, an endpoint that fails them all
    settings.WALLET = {**settings.WALLET, "WEBHOOK_MAX_ATTEMPTS": 3}
    receiver.mode = rx.FAIL
    merchant, _, _ = _merchant(receiver)
    _payment_received(_customer(), merchant, 900)
    worker = _worker()
    for _ in range(4):
        worker.run_once()
        _time_passes()
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("dead", 3, 500)
    assert len(receiver.received) == 3
    # when: staff retry it and the endpoint is back
    staff = staff_create(email="ops@example.com", role="operations", password="staff password 1")
    receiver.mode = rx.OK
    assert webhook_delivery_retry(delivery_id=delivery.id, actor=staff) is True
    worker.run_once()
    # then
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    assert receiver.accepted_ids() == [delivery.public_event_id]
    audit = AuditLog.objects.get(action="webhook_delivery.retry")
    assert audit.target == f"webhook_delivery:{delivery.id}" and audit.actor_id == staff.id
    assert audit.data == {"previous_status": "dead", "attempts": 3}
    # and a delivered delivery is not retried
    assert webhook_delivery_retry(delivery_id=delivery.id, actor=staff) is False


@pytest.mark.django_db(transaction=True)
def test_deleting_an_endpoint_cancels_what_was_pending_for_it(receiver):
    # given
    merchant, endpoint, _ = _merchant(receiver)
    _payment_received(_customer(), merchant, 100)
    Worker(jobs=[]).run_once()
    # when
    webhook_endpoint_delete(wallet=merchant, endpoint_id=str(endpoint.id))
    _worker().run_once()
    # then
    assert WebhookDelivery.objects.get().status == "cancelled"
    assert receiver.received == []
    assert WebhookEndpoint.objects.get().deleted_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_run_stops_starting_deliveries_when_its_time_budget_is_spent(receiver):
    # given: three deliveries to an endpoint slower than the budget
    receiver.mode, receiver.slow_seconds = rx.SLOW, 0.8
    merchant, _, _ = _merchant(receiver)
    customer = _customer()
    for amount in (1, 2, 3):
        _payment_received(customer, merchant, amount)
    Worker(jobs=[]).run_once()
    # when
    attempted = webhook_deliveries_run(limit=10, budget_seconds=0.3)
    # then: one was tried; the others were handed back untried, at once claimable
    assert attempted == 1
    rows = list(WebhookDelivery.objects.order_by("id"))
    assert [d.attempts for d in rows] == [1, 0, 0]
    assert all(d.leased_until is None for d in rows)
