"""The transactional outbox: events commit with their change, claims are leases that skip
each other's rows, failures back off, and a crashed worker's events come back."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from ledger.models import OutboxEvent
from ledger.outbox import (
    RETRY_MAX_SECONDS,
    outbox_claim,
    outbox_emit,
    outbox_mark_delivered,
    outbox_mark_failed,
    outbox_release,
    outbox_retry_delay,
)


def _emit(n: int = 1, type: str = "test.event") -> list[OutboxEvent]:
    with transaction.atomic():
        return [outbox_emit(type=type, payload={"n": i}) for i in range(n)]


def _db_now():
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_emit_outside_a_transaction_is_refused():
    # when / then
    with pytest.raises(RuntimeError, match="inside the transaction"):
        outbox_emit(type="test.event", payload={})
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_event_commits_or_rolls_back_with_its_change():
    # given
    class Boom(Exception):
        pass

    # when: one transaction rolls back, one commits
    with pytest.raises(Boom), transaction.atomic():
        outbox_emit(type="test.rolled_back", payload={})
        raise Boom
    with transaction.atomic():
        outbox_emit(type="test.committed", payload={"amount": 100})
    # then
    assert list(OutboxEvent.objects.values_list("type", "payload")) == [("test.committed", {"amount": 100})]


@pytest.mark.django_db
def test_claim_leases_the_oldest_available_events_and_counts_an_attempt():
    # given
    events = _emit(3)
    # when
    claimed = outbox_claim(limit=2, lease_seconds=60)
    # then
    assert [e.id for e in claimed] == [events[0].id, events[1].id]
    now = _db_now()
    assert [e.payload for e in claimed] == [{"n": 0}, {"n": 1}]
    for event in claimed:
        assert event.attempts == 1
        assert now + timedelta(seconds=55) < event.leased_until <= now + timedelta(seconds=61)
    # and the leased ones are not handed out again while the lease runs
    assert [e.id for e in outbox_claim(limit=10, lease_seconds=60)] == [events[2].id]
    assert outbox_claim(limit=10, lease_seconds=60) == []


@pytest.mark.django_db
def test_a_crashed_workers_events_are_claimed_again_after_the_lease():
    # given: a worker claimed the event and died without marking it
    (event,) = _emit(1)
    (first,) = outbox_claim(limit=1, lease_seconds=60)
    assert outbox_claim(limit=1, lease_seconds=60) == []
    # when: its lease runs out
    OutboxEvent.objects.filter(id=event.id).update(leased_until=timezone.now() - timedelta(seconds=1))
    again = outbox_claim(limit=1, lease_seconds=60)
    # then: the same event, second attempt
    assert [e.id for e in again] == [first.id]
    assert again[0].attempts == 2


@pytest.mark.django_db
def test_delivered_and_not_yet_available_events_are_not_claimed():
    # given
    delivered, later, ready = _emit(3)
    outbox_mark_delivered(event_ids=[delivered.id])
    OutboxEvent.objects.filter(id=later.id).update(available_at=timezone.now() + timedelta(minutes=5))
    # when
    claimed = outbox_claim(limit=10, lease_seconds=60)
    # then
    assert [e.id for e in claimed] == [ready.id]


@pytest.mark.django_db
def test_mark_delivered_is_once():
    # given
    (event,) = _emit(1)
    outbox_claim(limit=1, lease_seconds=60)
    # when
    first = outbox_mark_delivered(event_ids=[event.id])
    second = outbox_mark_delivered(event_ids=[event.id])
    # then
    assert (first, second) == (1, 0)
    event.refresh_from_db()
    assert event.delivered_at is not None
    assert event.leased_until is None


@pytest.mark.django_db
def test_mark_delivered_marks_a_batch_in_one_statement_and_counts_only_the_new():
    # given: a batch, one of which another worker already marked
    events = _emit(4)
    outbox_claim(limit=4, lease_seconds=60)
    outbox_mark_delivered(event_ids=[events[1].id])
    OutboxEvent.objects.filter(id=events[2].id).update(last_error="TimeoutError: earlier attempt")
    delivered_before = OutboxEvent.objects.get(id=events[1].id).delivered_at
    # when
    with CaptureQueriesContext(connection) as queries:
        marked = outbox_mark_delivered(event_ids=[e.id for e in events])
    # then
    assert marked == 3 and len(queries) == 1
    rows = {e.id: e for e in OutboxEvent.objects.all()}
    assert all(rows[e.id].delivered_at is not None and rows[e.id].leased_until is None for e in events)
    assert rows[events[1].id].delivered_at == delivered_before
    assert rows[events[2].id].last_error == ""
    assert outbox_mark_delivered(event_ids=[]) == 0


@pytest.mark.django_db
def test_a_failed_event_comes_back_after_its_backoff():
    # given
    (event,) = _emit(1)
    outbox_claim(limit=1, lease_seconds=60)
    # when
    outbox_mark_failed(event_id=event.id, error="ConnectionError: refused" + "x" * 5000, retry_in=timedelta(seconds=30))
    # then: not offered during the backoff
    event.refresh_from_db()
    now = _db_now()
    assert event.leased_until is None
    assert event.last_error.startswith("ConnectionError: refused")
    assert len(event.last_error) == 2000
    assert now + timedelta(seconds=25) < event.available_at <= now + timedelta(seconds=31)
    assert outbox_claim(limit=1, lease_seconds=60) == []
    # and offered again once it has passed
    OutboxEvent.objects.filter(id=event.id).update(available_at=timezone.now() - timedelta(seconds=1))
    (again,) = outbox_claim(limit=1, lease_seconds=60)
    assert again.id == event.id and again.attempts == 2


def test_retry_delay_doubles_up_to_an_hour():
    # when
    delays = [outbox_retry_delay(attempts=n).total_seconds() for n in range(1, 14)]
    # then
    assert delays[:6] == [5, 10, 20, 40, 80, 160]
    assert delays[-1] == RETRY_MAX_SECONDS
    assert delays == sorted(delays)
    assert outbox_retry_delay(attempts=10_000).total_seconds() == RETRY_MAX_SECONDS


@pytest.mark.django_db
def test_release_hands_back_an_unstarted_claim_without_counting_it():
    # given
    (event,) = _emit(1)
    outbox_claim(limit=1, lease_seconds=60)
    # when
    outbox_release(event_ids=[event.id])
    # then
    event.refresh_from_db()
    assert (event.leased_until, event.attempts) == (None, 0)
    assert [e.id for e in outbox_claim(limit=1, lease_seconds=60)] == [event.id]


def test_claim_refuses_a_nonsense_limit():
    with pytest.raises(ValueError):
        outbox_claim(limit=0, lease_seconds=60)


@pytest.mark.django_db(transaction=True)
def test_claim_skips_rows_another_transaction_holds_instead_of_waiting():
    # given: another connection holds the first two events locked (a claim in progress)
    events = _emit(4)
    locked = threading.Event()
    release = threading.Event()

    def hold_two() -> None:
        try:
            with transaction.atomic():
                list(OutboxEvent.objects.select_for_update().filter(id__in=[events[0].id, events[1].id]))
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_two)
    holder.start()
    assert locked.wait(10)
    try:
        # when
        claimed = outbox_claim(limit=10, lease_seconds=60)
    finally:
        release.set()
        holder.join(10)
    # then: the other two, at once
    assert [e.id for e in claimed] == [events[2].id, events[3].id]


@pytest.mark.django_db(transaction=True)
def test_concurrent_claimers_never_get_the_same_event():
    # given
    total = 300
    with transaction.atomic():
        OutboxEvent.objects.bulk_create(OutboxEvent(type="test.event", payload={"n": i}) for i in range(total))
    start = threading.Barrier(4)
    claimed: list[list[int]] = [[] for _ in range(4)]
    errors: list[BaseException] = []

    def claimer(slot: int) -> None:
        try:
            start.wait(10)
            while batch := outbox_claim(limit=7, lease_seconds=60):
                claimed[slot].extend(e.id for e in batch)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claimer, args=(slot,)) for slot in range(4)]
    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # then: every event claimed exactly once, once each
    assert errors == []
    everything = [event_id for ids in claimed for event_id in ids]
    assert len(everything) == total
    assert len(set(everything)) == total
    assert set(OutboxEvent.objects.values_list("attempts", flat=True)) == {1}
    # and they really claimed side by side
    assert sum(1 for ids in claimed if ids) > 1
